"""A fixed batch of pieces to a plan's inputs (the latency benchmark and GPU tests): pick the
smallest bucket that holds it, pad the rest. The engine's steps go through runner.py instead.

Padding follows docs/FORMAT.md: padded tokens write nothing to the cache (slot -1), padded
sequences have length 0, padded logits rows are greedy on row 0. A batch edits no logits and
masks no tokens, so its inputs leave out the sparse ones (sparse_inputs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmc.errors import LlmcError

from .sampling_params import uniform_draw


@dataclass
class StepBatch:
    kind: str  # prefill | decode
    token_ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    slots: list[int] = field(default_factory=list)
    block_tables: list[list[int]] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    query_lens: list[int] = field(default_factory=list)
    logits_indices: list[int] = field(default_factory=list)
    rows: list[tuple[float, int, float, float]] = field(default_factory=list)  # temperature, top_k, top_p, uniform
    logit_rows: list[int | None] = field(default_factory=list)  # per sequence: its row, or None if it samples nothing

    def add_piece(self, tokens: list[int], start: int, table: list[int], block_size: int) -> None:
        """New tokens of one sequence, the first at position `start`, its KV in the blocks of `table`."""
        positions = range(start, start + len(tokens))
        self.token_ids += tokens
        self.positions += positions
        self.slots += [table[p // block_size] * block_size + p % block_size for p in positions]
        self.block_tables.append(list(table))
        self.seq_lens.append(start + len(tokens))
        self.query_lens.append(len(tokens))

    def add_row(self, token_index: int, params, seed: int, draw_index: int) -> int:
        self.logits_indices.append(token_index)
        draw = uniform_draw(seed, draw_index) if params.temperature > 0 else 0.0  # greedy draws nothing
        self.rows.append((params.temperature, params.top_k, params.top_p, draw))
        return len(self.logits_indices) - 1


def pick_plan(plans: dict[str, dict], batch: StepBatch) -> dict:
    fits = [
        p for p in plans.values()
        if p["kind"] == batch.kind and p["num_tokens"] >= len(batch.token_ids)
        and p["num_seqs"] >= len(batch.seq_lens) and p["num_logits"] >= len(batch.logits_indices)
        and p["max_blocks_per_seq"] >= max((len(t) for t in batch.block_tables), default=0)
    ]
    if not fits:
        raise LlmcError(f"no {batch.kind} plan holds {len(batch.token_ids)} tokens of {len(batch.seq_lens)} sequences")
    return min(fits, key=lambda p: (p["num_tokens"], p["num_seqs"]))


def _padded(values, length: int, pad, dtype) -> np.ndarray:
    out = np.full(length, pad, dtype=dtype)
    out[: len(values)] = values
    return out


def fill_inputs(plan: dict, batch: StepBatch) -> dict[str, np.ndarray]:
    t, b, r, mb = plan["num_tokens"], plan["num_seqs"], plan["num_logits"], plan["max_blocks_per_seq"]
    tables = np.zeros((b, mb), dtype=np.int32)
    for i, table in enumerate(batch.block_tables):
        tables[i, : len(table)] = table
    starts = np.zeros(b + 1, dtype=np.int32)
    starts[1 : len(batch.query_lens) + 1] = np.cumsum(batch.query_lens)
    starts[len(batch.query_lens) + 1 :] = starts[len(batch.query_lens)]
    rows = list(zip(*batch.rows)) or [(), (), (), ()]
    neutral = {  # no min_p, no token mask, no logprobs (inputs of bundles that have them)
        "min_p": np.zeros(r, np.float32), "bitmask_on": np.zeros(r, np.int32),
        "logprob_token_ids": np.full(r, -1, np.int32), "num_logprobs": np.full(r, -1, np.int32),
    }
    return {key: value for key, value in neutral.items() if key in plan["inputs"]} | {
        "input_ids": _padded(batch.token_ids, t, 0, np.int32),
        "positions": _padded(batch.positions, t, 0, np.int32),
        "slot_mapping": _padded(batch.slots, t, -1, np.int32),
        "block_tables": tables,
        "seq_lens": _padded(batch.seq_lens, b, 0, np.int32),
        "query_start_loc": starts,
        "logits_indices": _padded(batch.logits_indices, r, 0, np.int32),
        "temperature": _padded(rows[0], r, 0.0, np.float32),
        "top_k": _padded(rows[1], r, 0, np.int32),
        "top_p": _padded(rows[2], r, 1.0, np.float32),
        "uniform": _padded(rows[3], r, 0.0, np.float32),
    }
