"""The sparse step inputs: a plan's logit edits and token bitmask (aot/ir/ops/logit_edits.py).

They are large (7.5 MB at batch 256 over a 151,936-token vocabulary) and neutral in almost every
step, so they are written and copied only when a step uses them:
- `logit_edit_index` [E, 2] holds the step's edits in its leading rows and -1 in every row after
  them (the runner writes it so; a -1 row edits nothing), so the rows in use are found by bisection;
- `allowed_bitmask` [R, words] is read only on the rows whose `bitmask_on` is set.
A step that uses neither may leave all three out of the inputs it hands to a backend's `run`.
"""

from __future__ import annotations

import bisect

import numpy as np

NEUTRAL = {"logit_edit_index": -1, "logit_edit_values": 0.0, "allowed_bitmask": 0}  # what they hold when unused


def live_edits(index: np.ndarray) -> int:
    """Rows of logit_edit_index before its first -1 row, every row after which is -1."""
    rows = index[:, 0]
    return bisect.bisect_left(range(len(rows)), True, key=lambda i: bool(rows[i] < 0))


def last_edit(index: np.ndarray) -> int:
    """Rows of logit_edit_index up to its last edit, wherever its -1 rows lie (inputs from outside the runner)."""
    live = np.flatnonzero(index[:, 0] >= 0)
    return int(live[-1]) + 1 if live.size else 0


def masked_rows(bitmask_on: np.ndarray) -> range:
    """The rows of allowed_bitmask a step reads: from the first to the last whose bitmask_on is set."""
    on = np.flatnonzero(bitmask_on)
    return range(int(on[0]), int(on[-1]) + 1) if on.size else range(0)
