"""A step's inputs as rank 0 sends them: every dense input of the plan, and of the sparse ones
(sparse_inputs.py) only the rows the step uses, in sorted key order. Every rank holds the same
plans, so the receiver knows each array's shape and dtype; `edits` and `masked` say which rows of
the sparse ones came."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llmc.runtime.sparse_inputs import NEUTRAL, live_edits, masked_rows

EDITS = ("logit_edit_index", "logit_edit_values")


@dataclass(frozen=True)
class StepInputs:
    payload: bytes
    edits: int  # leading rows of the logit edits in the payload (every later row is neutral)
    masked: range  # rows of allowed_bitmask in the payload (the rows bitmask_on reads)


def _rows(key: str, edits: int, masked: range):
    """The rows of input `key` that a step with `edits` edits and `masked` bitmask rows uses."""
    if key in EDITS:
        return slice(0, edits)
    if key == "allowed_bitmask":
        return slice(masked.start, masked.stop)
    return ...


def pack_inputs(views: dict[str, np.ndarray]) -> StepInputs:
    edits = live_edits(views["logit_edit_index"]) if "logit_edit_index" in views else 0
    masked = masked_rows(views["bitmask_on"]) if "allowed_bitmask" in views else range(0)
    payload = b"".join(np.ascontiguousarray(views[key][_rows(key, edits, masked)]).tobytes() for key in sorted(views))
    return StepInputs(payload, edits, masked)


def unpack_inputs(step: StepInputs, views: dict[str, np.ndarray]) -> None:
    """Write `step` into the receiver's own input arrays of the same plan, which then read as the
    sender's in every row a step uses: edit rows an earlier step left past `step.edits` become
    neutral again; bitmask rows outside `step.masked` are not read, so they are left as they are."""
    if "logit_edit_index" in views:
        stale = slice(step.edits, max(step.edits, live_edits(views["logit_edit_index"])))
        for key in EDITS:
            views[key][stale] = NEUTRAL[key]
    offset = 0
    for key in sorted(views):
        view = views[key][_rows(key, step.edits, step.masked)]
        if view.size:
            view[...] = np.frombuffer(step.payload, view.dtype, view.size, offset).reshape(view.shape)
        offset += view.nbytes
    if offset != len(step.payload):
        raise ValueError(f"a step's inputs are {len(step.payload)} bytes; this rank's plan holds {offset}")
