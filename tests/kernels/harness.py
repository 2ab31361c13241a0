"""Running one provider of an op the way the kernel tests need: every provider, poisoned outputs."""

import dataclasses

import pytest

import llmc.kernels  # noqa: F401  (registers the kernel impls)
from llmc.aot.ir import OPS
from llmc.kernels.launch import allocate_outputs, pack_result, resolve, run_eager


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
    outputs = [out.fill_(float("nan")) for out in allocate_outputs(impl.op, args)]
    for launch in impl.fn(*args):
        launch = dataclasses.replace(launch, constexprs={**launch.constexprs, **override})
        launch.kernel[launch.grid3](
            *[resolve(a, outputs) for a in launch.args],
            **launch.constexprs,
            num_warps=launch.num_warps,
            num_stages=launch.num_stages,
        )
    return pack_result(impl.op, outputs)
