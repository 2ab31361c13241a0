"""silu_and_mul and gelu_tanh_and_mul: every kernel impl against the native functions."""

import pytest
import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS


def _args(dtype, shape):
    tokens, width = shape
    x = (torch.randn(tokens, 2 * width, generator=torch.Generator().manual_seed(tokens * width)) * 4).to(dtype)
    x[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -20.0]).to(dtype)  # exp overflow and the origin
    return (x,)


CASES = dict(dtype=[torch.float32, torch.bfloat16, torch.float16], shape=[(1, 96), (3, 80), (7, 200), (2, 3000)])


def _check(op, provider, dtype, shape):
    (x,) = _args(dtype, shape)
    assert_close(run(op, provider, x), OPS[op].native(x), dtype, f"{op} {provider} {list(x.shape)}")


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(100) on purpose
@parametrize("silu_and_mul", _args, **CASES)
def test_silu_and_mul(provider, dtype, shape):
    _check("silu_and_mul", provider, dtype, shape)


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
@parametrize("gelu_tanh_and_mul", _args, **CASES)
def test_gelu_tanh_and_mul(provider, dtype, shape):
    _check("gelu_tanh_and_mul", provider, dtype, shape)
