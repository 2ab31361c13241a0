"""What a launch rule may know about its target, set by the planner around each rule (no torch here:
the runtime reads targets too)."""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class LaunchContext:
    """What a launch rule may know about the target: its parallelism and limits."""

    target: str
    num_sms: int  # streaming multiprocessors (NVIDIA) or compute units (AMD)
    warp_size: int
    shared_mem_per_block: int  # bytes a block may use (the opt-in maximum)
    capabilities: frozenset[str] = frozenset()


DEFAULT_CONTEXT = LaunchContext("sm90", 132, 32, 232448, frozenset({"bf16", "mma", "cp_async", "fp8", "wgmma", "tma"}))
_CURRENT: contextvars.ContextVar[LaunchContext] = contextvars.ContextVar("llmc_launch_context", default=DEFAULT_CONTEXT)


def current_launch_context() -> LaunchContext:
    return _CURRENT.get()


@contextlib.contextmanager
def launch_context(context: LaunchContext):
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
