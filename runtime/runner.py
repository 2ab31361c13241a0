"""ModelRunner: one scheduled step -> the plan that holds it, its inputs, a launch on the backend.

The runner owns the plans and writes each step's inputs in place into the backend's host input
arrays (pinned on a GPU), from each sequence's new tokens and positions: a decode step reads one
token per sequence, never its history. Block-table rows are kept per input array and only their
new blocks are written. Padding follows docs/FORMAT.md: padded tokens write nothing to the cache
(slot -1), padded sequences have length 0, padded logits rows are greedy on row 0.

A token still `PENDING` (sampled by the step in flight) is fed on the device: the launch names,
for each such input row, the row of the previous launch's `next_tokens` that holds it.

The backend protocol: `inputs(plan_name)` (dict of writable numpy arrays for the next launch),
`launch(plan_name, feed, want_logits)` (enqueue; `feed` is a list of (input row, previous row)),
`wait(handle)` (next_tokens int32 [R], logits float32 [R, V] or None). When a row asks for log
probabilities, `launch` also gets `want_logprobs=True` and `wait` adds the plan's three logprobs
outputs; rows of prompt positions (prompt logprobs) follow the sampled rows and sample nothing used.
The logit edits fill the leading rows of `logit_edit_index`, -1 every row after them (`_put` pads
what the last step used), and the bitmask rows of unmasked rows are left as they are: a backend
copies only what a step uses (sparse_inputs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmc.artifacts.plan_schema import INPUT_PADS
from llmc.errors import LlmcError

from .logprobs import row_entry
from .sampler import Sampler
from .scheduler import SchedulerOutput
from .sequence import PENDING

SAMPLING_INPUTS = ("temperature", "top_k", "top_p", "min_p", "uniform")


@dataclass
class Launch:
    handle: object
    rows: list[int]  # per scheduled sequence: its logits row, or -1
    sampled: list | None = None  # when a row asked for logprobs: the sequence of each sampled row
    prompt_rows: list = field(default_factory=list)  # (seq, prompt positions, first row) of prompt logprob rows
    logprobs: dict = field(default_factory=dict)  # after wait: seq_id -> TokenLogprob of its sampled token
    prompt_logprobs: dict = field(default_factory=dict)  # after wait: seq_id -> [TokenLogprob] of its positions


class ModelRunner:
    def __init__(self, backend, plans: dict[str, dict], block_size: int, sampler: Sampler):
        self.backend, self.block_size, self.sampler = backend, block_size, sampler
        self.plans = plans
        self.decode = sorted((p for p in plans.values() if p["kind"] == "decode"), key=lambda p: p["num_seqs"])
        self.prefill = sorted((p for p in plans.values() if p["kind"] == "prefill"),
                              key=lambda p: (p["num_tokens"], p["num_seqs"]))
        self._last_rows: dict[int, int] = {}  # seq_id -> its logits row in the last launch
        self._tables: dict[int, list] = {}  # id(block_tables array) -> per row [table list, blocks written]
        self._extent: dict[int, int] = {}  # id(input array) -> how many leading entries hold step data

    def pick(self, is_prefill: bool, num_tokens: int, num_seqs: int, num_logits: int) -> dict:
        for p in self.prefill if is_prefill else self.decode:
            if p["num_tokens"] >= num_tokens and p["num_seqs"] >= num_seqs and p["num_logits"] >= num_logits:
                return p
        kind = "prefill" if is_prefill else "decode"
        raise LlmcError(f"no {kind} plan holds {num_tokens} tokens of {num_seqs} sequences")

    # -- a scheduled step ----------------------------------------------------------------------

    def launch(self, out: SchedulerOutput) -> Launch:
        seqs, counts, starts = out.seqs, out.num_new_tokens, out.starts
        bs = self.block_size
        ids, positions, slots, seq_lens, query_start, feed = [], [], [], [], [0], []
        logits_indices, sampled, indices, rows, firsts = [], [], [], [], []
        last_rows = self._last_rows
        for seq, n, start, index in zip(seqs, counts, starts, out.sample_indices):
            table = seq.block_table
            firsts.append(len(ids))
            if n == 1:
                token = seq.token_at(start)
                if token == PENDING:
                    feed.append((len(ids), last_rows[seq.seq_id]))
                    token = 0
                ids.append(token)
                positions.append(start)
                slots.append(table[start // bs] * bs + start % bs)
            else:
                ids += seq.tokens(start, start + n)
                span = range(start, start + n)
                positions += span
                slots += [table[p // bs] * bs + p % bs for p in span]
            seq_lens.append(start + n)
            query_start.append(len(ids))
            if index >= 0:
                rows.append(len(logits_indices))
                logits_indices.append(len(ids) - 1)
                sampled.append(seq)
                indices.append(index)
            else:
                rows.append(-1)
        prompt_rows = []  # after the sampled rows: one row per prompt position whose logprob is asked for
        for seq, n, start, first in zip(seqs, counts, starts, firsts):
            span = seq.prompt_logprob_positions(start, start + n)
            if span:
                prompt_rows.append((seq, span, len(logits_indices)))
                logits_indices += [first + p - start for p in span]
        plan = self.pick(out.is_prefill, len(ids), len(seqs), len(logits_indices))
        edits = plan["inputs"].get("logit_edit_index")
        sampling = self.sampler.rows(sampled, indices, edits["shape"][0] if edits else None)
        v = self.backend.inputs(plan["name"])
        self._put(v, "input_ids", ids)
        self._put(v, "positions", positions)
        self._put(v, "slot_mapping", slots)
        self._put(v, "seq_lens", seq_lens)
        qsl = v["query_start_loc"]
        qsl[: len(query_start)] = query_start
        qsl[len(query_start):] = len(ids)
        self._put(v, "logits_indices", logits_indices)
        self._put_rows(v, sampling, len(sampled))
        self._put_tables(v["block_tables"], seqs)
        asked = self._put_logprob_rows(v, sampled, prompt_rows)
        handle = self.backend.launch(plan["name"], feed, False, **({"want_logprobs": True} if asked else {}))
        self._last_rows = {seq.seq_id: row for seq, row in zip(sampled, range(len(sampled)))}
        for seq, span, _ in prompt_rows:
            seq.num_prompt_logprobs = span.stop
        return Launch(handle, rows, sampled if asked else None, prompt_rows)

    def wait(self, launch: Launch) -> list[int | None]:
        """The token sampled for each scheduled sequence (None: no sample); fills the launch's logprobs."""
        result = self.backend.wait(launch.handle)
        values = result[0].tolist()
        if launch.sampled is not None:
            arrays = result[2]
            for row, seq in enumerate(launch.sampled):
                if seq.params.logprobs is not None:
                    launch.logprobs[seq.seq_id] = row_entry(arrays, row, values[row], seq.params.logprobs)
            for seq, span, first in launch.prompt_rows:
                top, prompt = seq.params.prompt_logprobs, seq.prompt_token_ids
                launch.prompt_logprobs[seq.seq_id] = [row_entry(arrays, first + j, prompt[p + 1], top)
                                                      for j, p in enumerate(span)]
        return [values[r] if r >= 0 else None for r in launch.rows]

    def _put_logprob_rows(self, v: dict, sampled: list, prompt_rows: list) -> bool:
        """Each row's logprob target (-1: the sampled token) and top count (-1: none); whether any row asks."""
        if "num_logprobs" not in v:  # an older bundle: the engine refuses logprobs requests
            return False
        targets = [-1] * len(sampled)
        counts = [-1 if seq.params.logprobs is None else seq.params.logprobs for seq in sampled]
        for seq, span, _ in prompt_rows:
            targets += seq.prompt_token_ids[span.start + 1 : span.stop + 1]
            counts += [seq.params.prompt_logprobs] * len(span)
        self._put(v, "logprob_token_ids", targets)
        self._put(v, "num_logprobs", counts)
        return any(c >= 0 for c in counts)

    def _put_rows(self, v: dict, rows, num_rows: int) -> None:
        """The sampling inputs; a plan without logit edit inputs (an older bundle) has none to write."""
        for key in SAMPLING_INPUTS:
            if key in v:
                self._put(v, key, getattr(rows, key))
        if "logit_edit_index" in v:
            self._put(v, "logit_edit_index", rows.edit_index)
            self._put(v, "logit_edit_values", rows.edit_values)
        if "bitmask_on" in v:
            on = [0] * num_rows
            for row, matcher in rows.masks:
                matcher.fill_bitmask(v["allowed_bitmask"][row])
                on[row] = 1
            self._put(v, "bitmask_on", on)

    def _put(self, v: dict, key: str, values) -> None:
        array = v[key]
        n, prev = len(values), self._extent.get(id(array), len(array))  # first use: pad it all
        array[:n] = values
        if prev > n:
            array[n:prev] = INPUT_PADS.get(key, 0)
        self._extent[id(array)] = n

    def _put_tables(self, tables: np.ndarray, seqs) -> None:
        cache = self._tables.get(id(tables))
        if cache is None or len(cache) != len(tables):
            cache = self._tables[id(tables)] = [[None, 0] for _ in range(len(tables))]
        for i, (row, seq) in enumerate(zip(cache, seqs)):
            table = seq.block_table
            if row[0] is not table:
                tables[i, : len(table)] = table
                row[0], row[1] = table, len(table)
            elif row[1] != len(table):
                tables[i, row[1] : len(table)] = table[row[1] :]
                row[1] = len(table)

    # -- scoring ---------------------------------------------------------------------------------

    def logits(self, seq, start: int, count: int) -> np.ndarray:
        """float32 logits [count, V] for tokens start..start+count of `seq` (its blocks allocated),
        in chunks of the largest prefill plan's logits rows."""
        chunk = self.prefill[-1]["num_logits"]
        parts = [self._chunk_logits(seq, s, min(chunk, start + count - s)) for s in range(start, start + count, chunk)]
        return np.concatenate(parts)

    def _chunk_logits(self, seq, start: int, count: int) -> np.ndarray:
        bs, table = self.block_size, seq.block_table
        plan = self.pick(True, count, 1, count)
        v = self.backend.inputs(plan["name"])
        span = range(start, start + count)
        self._put(v, "input_ids", seq.tokens(start, start + count))
        self._put(v, "positions", list(span))
        self._put(v, "slot_mapping", [table[p // bs] * bs + p % bs for p in span])
        self._put(v, "seq_lens", [start + count])
        v["query_start_loc"][0] = 0
        v["query_start_loc"][1:] = count
        self._put(v, "logits_indices", list(range(count)))
        self._put_rows(v, self.sampler.rows([], [], 0), 0)
        self._put_logprob_rows(v, [], [])
        for key in SAMPLING_INPUTS:
            if key in v:
                self._put(v, key, [INPUT_PADS.get(key, 0)] * count)
        self._put_tables(v["block_tables"], [seq])
        self._last_rows = {}
        _, logits = self.backend.wait(self.backend.launch(plan["name"], [], True))
        return logits[:count]
