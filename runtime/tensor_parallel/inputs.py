"""A step's inputs as one byte string: every input array of the plan, in sorted key order. Every
rank holds the same plans, so the receiver knows each array's shape and dtype."""

from __future__ import annotations

import numpy as np


def pack_inputs(views: dict[str, np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(views[key]).tobytes() for key in sorted(views))


def unpack_inputs(payload: bytes, views: dict[str, np.ndarray]) -> None:
    """Write `payload` into the receiver's own input arrays of the same plan."""
    offset = 0
    for key in sorted(views):
        view = views[key]
        view[...] = np.frombuffer(payload, view.dtype, view.size, offset).reshape(view.shape)
        offset += view.nbytes
    if offset != len(payload):
        raise ValueError(f"a step's inputs are {len(payload)} bytes; this rank's plan holds {offset}")
