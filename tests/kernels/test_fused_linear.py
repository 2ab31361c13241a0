"""`norm_linear` and `silu_mul_linear`: every kernel impl against the native function, through Triton's interpreter."""

import torch
from harness import parametrize, run
from test_linear import make, small_blocks
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SHAPES = [(24, 48), (56, 80), (64, 80)]  # (N, K); the last one wgmma takes (multiples of 16)
EPS = 1e-6


def _norm_args(dtype, m, nk, prologue):
    (n, k), (has_residual, has_bias) = nk, prologue
    x, weight = make((m, k), dtype, 1), make((n, k), dtype, 2) / k**0.5
    residual = make((m, k), dtype, 3) if has_residual else None
    norm_weight = (torch.rand(k, generator=torch.Generator().manual_seed(4)) + 0.5).to(dtype)
    bias = make((n,), dtype, 5) if has_bias else None
    return x, residual, norm_weight, EPS, weight, bias


def _gated_args(dtype, m, nk, has_bias):
    n, k = nk
    x, weight = make((m, 2 * k), dtype, 6) * 2, make((n, k), dtype, 7) / k**0.5
    return x, weight, make((n,), dtype, 8) if has_bias else None


def _assert_norm_linear_close(result, args, dtype, what):
    """The table's tolerance on top of the one difference in rounding the kernel is allowed.

    Native rounds the normalised row, then its product with the norm weight (two roundings of the
    A operand); the kernel rounds x * norm_weight once and scales the row after the dot product.
    The A operands differ by under 2 ulps per element, so the outputs by at most
    2 * eps(dtype) * sum_k |a_k| |w_k|, which the comparison forgives before applying the table.
    The summed rows (x + residual) must be exact.
    """
    out, summed = result
    x, residual, norm_weight, eps, weight, bias = args
    expected, expected_summed = OPS["norm_linear"].native(*args)
    assert torch.equal(summed, expected_summed), f"{what}: summed rows differ"
    a = OPS["rms_norm"].native(expected_summed, norm_weight, eps).double().abs()
    slack = 0.0 if dtype == torch.float32 else 2 * torch.finfo(dtype).eps * (a @ weight.double().abs().T)
    e, o = expected.double(), out.double()
    forgiven = torch.clamp((o - e).nan_to_num(0.0), -slack, slack)  # NaN (unwritten) stays NaN in o only
    assert_close(o, e + forgiven, dtype, what)


@parametrize("norm_linear", _norm_args, dtype=DTYPES, m=[1, 3, 17, 70], nk=SHAPES,
             prologue=[(False, False), (True, False), (True, True)])  # (residual, bias)
def test_norm_linear(provider, dtype, m, nk, prologue):
    args = _norm_args(dtype, m, nk, prologue)
    _assert_norm_linear_close(run("norm_linear", provider, *args), args, dtype, provider)


@parametrize("silu_mul_linear", _gated_args, dtype=DTYPES, m=[1, 3, 17, 70], nk=SHAPES, has_bias=[False, True])
def test_silu_mul_linear(provider, dtype, m, nk, has_bias):
    args = _gated_args(dtype, m, nk, has_bias)
    assert_close(run("silu_mul_linear", provider, *args), OPS["silu_mul_linear"].native(*args), dtype, provider)


# several K steps, the last one partial: the row statistic must still cover all of K
@parametrize("norm_linear", lambda dtype, m: _norm_args(dtype, m, (144, 80), (True, True)), dtype=DTYPES, m=[1, 5, 70])
def test_norm_linear_k_loop(provider, dtype, m):
    args, small = _norm_args(dtype, m, (144, 80), (True, True)), small_blocks(provider)
    _assert_norm_linear_close(run("norm_linear", provider, *args, **small), args, dtype, f"{provider} {small}")


@parametrize("silu_mul_linear", lambda dtype, m: _gated_args(dtype, m, (144, 80), True), dtype=DTYPES, m=[1, 5, 70])
def test_silu_mul_linear_k_loop(provider, dtype, m):
    args, small = _gated_args(dtype, m, (144, 80), True), small_blocks(provider)
    assert_close(run("silu_mul_linear", provider, *args, **small), OPS["silu_mul_linear"].native(*args), dtype,
                 f"{provider} {small}")
