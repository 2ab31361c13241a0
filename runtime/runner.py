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
`wait(handle)` (next_tokens int32 [R], logits float32 [R, V] or None).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.errors import LlmcError

from .sampler import Sampler
from .scheduler import SchedulerOutput
from .sequence import PENDING

PADS = {"input_ids": 0, "positions": 0, "slot_mapping": -1, "seq_lens": 0, "logits_indices": 0,
        "temperature": 0.0, "top_k": 0, "top_p": 1.0, "uniform": 0.0}


@dataclass
class Launch:
    handle: object
    rows: list[int]  # per scheduled sequence: its logits row, or -1


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
        logits_indices, sampled, indices, rows = [], [], [], []
        last_rows = self._last_rows
        for seq, n, start, index in zip(seqs, counts, starts, out.sample_indices):
            table = seq.block_table
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
        plan = self.pick(out.is_prefill, len(ids), len(seqs), len(logits_indices))
        temperature, top_k, top_p, uniform = self.sampler.rows(sampled, indices)
        v = self.backend.inputs(plan["name"])
        self._put(v, "input_ids", ids)
        self._put(v, "positions", positions)
        self._put(v, "slot_mapping", slots)
        self._put(v, "seq_lens", seq_lens)
        qsl = v["query_start_loc"]
        qsl[: len(query_start)] = query_start
        qsl[len(query_start):] = len(ids)
        self._put(v, "logits_indices", logits_indices)
        self._put(v, "temperature", temperature)
        self._put(v, "top_k", top_k)
        self._put(v, "top_p", top_p)
        self._put(v, "uniform", uniform)
        self._put_tables(v["block_tables"], seqs)
        handle = self.backend.launch(plan["name"], feed, False)
        self._last_rows = {seq.seq_id: row for seq, row in zip(sampled, range(len(sampled)))}
        return Launch(handle, rows)

    def wait(self, launch: Launch) -> list[int | None]:
        tokens, _ = self.backend.wait(launch.handle)
        values = tokens.tolist()
        return [values[r] if r >= 0 else None for r in launch.rows]

    def _put(self, v: dict, key: str, values: list) -> None:
        array = v[key]
        n, prev = len(values), self._extent.get(id(array), 0)
        array[:n] = values
        if prev > n:
            array[n:prev] = PADS[key]
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
        for key in ("temperature", "top_k", "top_p", "uniform"):
            self._put(v, key, [PADS[key]] * count)
        self._put_tables(v["block_tables"], [seq])
        self._last_rows = {}
        _, logits = self.backend.wait(self.backend.launch(plan["name"], [], True))
        return logits[:count]
