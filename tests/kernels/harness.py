"""Running one provider of an op the way the kernel tests need: every provider, poisoned outputs."""


import pytest

import llmc.kernels  # noqa: F401  (registers the kernel impls)
from llmc.aot.ir import OPS
from llmc.kernels.launch import run_eager


def providers(op: str) -> list[str]:
    """Every impl registered on `op` (native included, as a check of the harness itself)."""
    return sorted(OPS[op].impls)


def run(op: str, provider: str, *args):
    """The op computed by `provider`; kernel outputs are filled with NaN first so unwritten ones show."""
    impl = OPS[op].impls[provider]
    if not impl.supports(*args):
        pytest.skip(f"{op}/{provider} does not support these arguments")
    if impl.launches:
        return run_eager(impl, args, out_fill=float("nan"))
    return impl.fn(*args)


def run_poisoned(impl, args, **override):
    """Run an impl's launches with its outputs filled with NaN first (and constexprs overridden)."""
    return run_eager(impl, args, out_fill=float("nan"), constexprs=override)
