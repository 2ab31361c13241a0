"""scale and soft_cap: every kernel impl against the native functions."""

import pytest
import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(1, 64), (7, 1500), (3, 211)]


def _x(dtype, shape):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(shape[0] * shape[1])) * 20).to(dtype)


@parametrize("scale", lambda dtype, shape: (_x(dtype, shape), 45.254833995939045), dtype=DTYPES, shape=SHAPES)
def test_scale(provider, dtype, shape):
    x = _x(dtype, shape)
    factor = 2304**0.5  # Gemma-2-2B's sqrt(hidden), not representable in bfloat16
    assert_close(run("scale", provider, x, factor), OPS["scale"].native(x, factor), dtype, f"scale {provider}")


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # tanh of saturated scores
@parametrize("soft_cap", lambda dtype, shape: (_x(dtype, shape).float(), 30.0), dtype=[torch.float32], shape=SHAPES)
def test_soft_cap(provider, dtype, shape):
    x = _x(dtype, shape).float()
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0])  # saturated both ways, and the origin
    assert_close(run("soft_cap", provider, x, 30.0), OPS["soft_cap"].native(x, 30.0), dtype, f"soft_cap {provider}")
