"""Kernel launches as data: what a `launches=True` impl returns for one op call, and where.

An impl's function takes the op's arguments (real tensors when run eagerly in tests, meta
tensors when the build plans a graph) and returns a list of `Launch`. `Out(i)` stands for the
op's i-th output, which the caller allocates: the eager runner from the op's fake function, the
planner in the activation arena. The same list therefore drives both an eager Triton launch
(tests, `TRITON_INTERPRET=1` on the CPU) and the bundle's launch plans (ahead of time).

A launch rule tunes for the GPU it will run on through `current_launch_context()`: the planner
sets the build target's context around each rule; eager runs get the default (an H100's).
It lives in `aot` so that the compiler and `kernels` both use it without importing each other.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any, Mapping

import torch

from .launch_context import DEFAULT_CONTEXT, LaunchContext, current_launch_context, launch_context  # noqa: F401


@dataclass(frozen=True)
class Out:
    index: int


@dataclass(frozen=True)
class Launch:
    kernel: Any  # a @triton.jit function
    grid: tuple[int, ...]
    args: tuple  # the kernel's non-constexpr parameters, in order: tensors, Out(i), int, float, None
    constexprs: Mapping[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3

    def __post_init__(self):
        if not 1 <= len(self.grid) <= 3 or any(int(g) < 1 for g in self.grid):
            raise ValueError(f"grid {self.grid} of {self.name} must be 1 to 3 positive integers")

    @property
    def name(self) -> str:
        fn = getattr(self.kernel, "fn", self.kernel)
        return getattr(fn, "__name__", repr(fn))

    @property
    def grid3(self) -> tuple[int, int, int]:
        g = tuple(int(x) for x in self.grid)
        return g + (1,) * (3 - len(g))


def allocate_outputs(op, args: tuple) -> list[torch.Tensor]:
    """The op's outputs for these inputs, as fresh tensors shaped by its fake function."""
    result = op.fake(*args)
    if result is None:
        return []
    if isinstance(result, torch.Tensor):
        return [result]
    return list(result)


def pack_result(op, outputs: list[torch.Tensor]):
    """Outputs in the shape the op's native function returns them (tensor, tuple, list, None)."""
    ret = typing.get_type_hints(op.native).get("return")
    origin = typing.get_origin(ret)
    if ret is None or ret is type(None):
        return None
    if origin is tuple:
        return tuple(outputs)
    if origin is list:
        return list(outputs)
    return outputs[0]


def resolve(arg, outputs: list[torch.Tensor]):
    return outputs[arg.index] if isinstance(arg, Out) else arg


def run_eager(impl, args: tuple, *, out_fill: float | None = None, constexprs: Mapping[str, Any] | None = None):
    """Run a launches impl on real tensors, the way the runtime would, through Triton's launcher.

    `out_fill` poisons the freshly allocated outputs first (tests pass NaN to catch unwritten
    elements); integer outputs get their dtype's smallest value instead. `constexprs` overrides
    the launch rule's meta-parameters (tests force small blocks to exercise loops).
    """
    outputs = allocate_outputs(impl.op, args)
    if out_fill is not None:
        for out in outputs:
            out.fill_(out_fill if out.is_floating_point() else torch.iinfo(out.dtype).min)
    for launch in impl.fn(*args):
        kernel_args = [resolve(a, outputs) for a in launch.args]
        launch.kernel[launch.grid3](
            *kernel_args, **{**launch.constexprs, **(constexprs or {})},
            num_warps=launch.num_warps, num_stages=launch.num_stages,
        )
    return pack_result(impl.op, outputs)
