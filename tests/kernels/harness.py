"""What a kernel test needs: its cases, and an impl run the way the runtime would, interpreted.

The op's native function is the oracle and never a case: `parametrize` gives one case per kernel
impl and argument set, and only the argument sets that impl's `supports_args` accepts
(whether it accepts the shapes real builds give it is tests/kernels/test_build_shapes.py's job).
"""

import itertools
from typing import Callable, Iterable

import pytest
from interpreter import interpreter

import llmc.kernels  # noqa: F401  (registers the kernel impls)
from llmc.aot.ir import OPS
from llmc.kernels.launch import run_eager


def providers(op: str) -> list[str]:
    """The kernel impls of `op` (everything but its native function)."""
    return sorted(name for name, impl in OPS[op].impls.items() if impl.launches)


def parametrize(op: str, make_args: Callable, **axes: Iterable) -> pytest.MarkDecorator:
    """Parametrize a test over (provider, *axes): each kernel impl of `op` crossed with each
    combination of the axes' values whose arguments, `make_args(**values)`, the impl supports.

    `make_args` is called here, at collection, only to ask each impl's `supports_args`.
    """
    names, params = list(axes), []
    for provider in providers(op):
        impl = OPS[op].impls[provider]
        for values in itertools.product(*axes.values()):
            if impl.supports(*make_args(**dict(zip(names, values)))):
                params.append(pytest.param(provider, *values, id="-".join([provider, *map(_id, values)])))
    return pytest.mark.parametrize(["provider", *names], params)


def _id(value) -> str:
    return str(value).replace("torch.", "").replace(" ", "")


def run(op: str, provider: str, *args, **constexprs):
    """The op computed by `provider` through Triton's interpreter, into outputs filled with NaN first
    (so unwritten elements show); `constexprs` override the launch rule's meta-parameters."""
    impl = OPS[op].impls[provider]
    assert impl.supports(*args), f"{op}/{provider} was given arguments it does not support: fix the case list"
    with interpreter():
        return run_eager(impl, args, out_fill=float("nan"), constexprs=constexprs)
