"""`norm_linear` and `silu_mul_linear`: every provider against the native function, through Triton's interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from harness import providers, run
from harness import run_poisoned
from test_linear import make
from tolerances import assert_close

import llmc.kernels.linear  # noqa: F401  (registers the impls)
from llmc.aot.ir import OPS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = [(24, 48), (56, 80), (64, 80)]  # (N, K); the last one wgmma takes (multiples of 16)
EPS = 1e-6


def _norm_args(m, n, k, dtype, has_residual, has_bias):
    x, weight = make((m, k), dtype, 1), make((n, k), dtype, 2) / k**0.5
    residual = make((m, k), dtype, 3) if has_residual else None
    norm_weight = (torch.rand(k, generator=torch.Generator().manual_seed(4)) + 0.5).to(dtype)
    bias = make((n,), dtype, 5) if has_bias else None
    return x, residual, norm_weight, EPS, weight, bias


def _assert_norm_linear_close(out, args, dtype, what):
    """The table's tolerance on top of the one difference in rounding the kernel is allowed.

    Native rounds the normalised row, then its product with the norm weight (two roundings of the
    A operand); the kernel rounds x * norm_weight once and scales the row after the dot product.
    The A operands differ by under 2 ulps per element, so the outputs by at most
    2 * eps(dtype) * sum_k |a_k| |w_k|, which the comparison forgives before applying the table.
    """
    x, residual, norm_weight, eps, weight, bias = args
    expected, _ = OPS["norm_linear"].native(*args)
    summed = x if residual is None else x + residual
    a = OPS["rms_norm"].native(summed, norm_weight, eps).double().abs()
    slack = 0.0 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps * (a @ weight.double().abs().T)
    e, o = expected.double(), out.double()
    forgiven = torch.clamp((o - e).nan_to_num(0.0), -slack, slack)  # NaN (unwritten) stays NaN in o only
    assert_close(o, e + forgiven, dtype, what)


def _gated_args(m, n, k, dtype, has_bias):
    x, weight = make((m, 2 * k), dtype, 6) * 2, make((n, k), dtype, 7) / k**0.5
    return x, weight, make((n,), dtype, 8) if has_bias else None


@pytest.mark.parametrize("provider", providers("norm_linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 3, 17, 70])
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("has_residual,has_bias", [(False, False), (True, False), (True, True)])
def test_norm_linear(provider, dtype, m, n, k, has_residual, has_bias):
    args = _norm_args(m, n, k, dtype, has_residual, has_bias)
    out, summed = run("norm_linear", provider, *args)
    _, expected_summed = OPS["norm_linear"].native(*args)
    _assert_norm_linear_close(out, args, dtype, provider)
    assert torch.equal(summed, expected_summed), f"{provider}: summed rows differ"


@pytest.mark.parametrize("provider", providers("silu_mul_linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 3, 17, 70])
@pytest.mark.parametrize("n,k", SHAPES)
@pytest.mark.parametrize("has_bias", [False, True])
def test_silu_mul_linear(provider, dtype, m, n, k, has_bias):
    args = _gated_args(m, n, k, dtype, has_bias)
    assert_close(run("silu_mul_linear", provider, *args), OPS["silu_mul_linear"].native(*args), dtype, provider)


def _kernel_providers(op):
    return [name for name, impl in OPS[op].impls.items() if impl.launches]


@pytest.mark.parametrize("provider", _kernel_providers("norm_linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 5, 70])
def test_norm_linear_k_loop(provider, dtype, m):
    # several K steps, the last one partial: the row statistic must still cover all of K
    args = _norm_args(m, 144, 80, dtype, True, True)
    impl = OPS["norm_linear"].impls[provider]
    if not impl.supports(*args):
        pytest.skip(f"{provider} does not take M={m}")
    small = {"BLOCK_K": 32} if provider == "triton_gemv" else {"BLOCK_K": 32, "GROUP_M": 2}
    out, summed = run_poisoned(impl, args, **small)
    _, expected_summed = OPS["norm_linear"].native(*args)
    _assert_norm_linear_close(out, args, dtype, f"{provider} {small}")
    assert torch.equal(summed, expected_summed), f"{provider} {small}: summed rows differ"


@pytest.mark.parametrize("provider", _kernel_providers("silu_mul_linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 5, 70])
def test_silu_mul_linear_k_loop(provider, dtype, m):
    args = _gated_args(m, 144, 80, dtype, True)
    impl = OPS["silu_mul_linear"].impls[provider]
    if not impl.supports(*args):
        pytest.skip(f"{provider} does not take M={m}")
    small = {"BLOCK_K": 32} if provider == "triton_gemv" else {"BLOCK_K": 32, "GROUP_M": 2}
    assert_close(run_poisoned(impl, args, **small), OPS["silu_mul_linear"].native(*args), dtype, f"{provider} {small}")
