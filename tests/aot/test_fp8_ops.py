"""The FP8 ops' native functions against a direct float32 computation of the same scheme.

The direct computation quantizes with its own code and sums group by group, scales outside the
sums (as a tensor-core kernel does), in float64; the natives dequantize and multiply in float32.
"""

import pytest
import torch

from llmc.aot.ir import OPS

FP8 = torch.float8_e4m3fn


def rand(shape, seed, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def quantize(x: torch.Tensor, group: int):
    """Rows of x in groups of `group` columns (0: whole rows): (e4m3 values as float64, float64 scales)."""
    step = group or x.shape[1]
    qs, scales = [], []
    for j in range(0, x.shape[1], step):
        part = x[:, j:j + step].double()
        scale = (part.abs().amax(1, keepdim=True) / 448).clamp_min(1e-12).float().double()
        qs.append((part / scale).float().clamp(-448, 448).to(FP8).double())
        scales.append(scale)
    return qs, scales


def direct(x, wq, wscale, bias, group):
    """sum over groups g of xs[t, g] * ws[n, g] * (xq_g @ wq_g^T), in float64."""
    xq, xs = quantize(x, group)
    step = group or x.shape[1]
    y = torch.zeros((x.shape[0], wq.shape[0]), dtype=torch.float64)
    for g, (q, s) in enumerate(zip(xq, xs)):
        w = wq[:, g * step:(g + 1) * step].double()
        y += s * wscale[:, g].double()[None, :] * (q @ w.T)
    return y if bias is None else y + bias.double()


def weights(n, k, group, seed):
    wq = (rand((n, k), seed) * 100).clamp(-448, 448).to(FP8)
    wscale = rand((n, -(-k // group) if group else 1), seed + 1).abs() / 1000 + 1e-4
    return wq, wscale


@pytest.mark.parametrize("group", [0, 16, 32])
@pytest.mark.parametrize("has_bias", [False, True])
@pytest.mark.parametrize("t,n,k", [(1, 24, 48), (7, 33, 70), (19, 56, 96)])
def test_fp8_linear_is_the_scheme(group, has_bias, t, n, k):
    x = rand((t, k), 1, 3.0)
    x[0, 5] = 40.0  # an outlier: the rest of its row or group rounds coarsely
    wq, wscale = weights(n, k, group, 2)
    bias = rand((n,), 4) if has_bias else None
    got = OPS["fp8_linear"].native(x, wq, wscale, bias, group)
    want = direct(x, wq, wscale, bias, group)
    err = (got.double() - want).abs().max() / want.abs().max()
    assert err < 1e-5, f"fp8_linear group {group}: {err:.2e} from the direct computation (relative to the largest output)"


def test_saturates_and_keeps_zero_rows():
    x = torch.zeros((3, 32))
    x[1] = rand((32,), 5)
    x[2, 0] = 1e30  # overflow of the e4m3 range would be NaN without saturation
    wq, wscale = weights(8, 32, 0, 6)
    y = OPS["fp8_linear"].native(x, wq, wscale, None, 0)
    assert torch.isfinite(y).all() and (y[0] == 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fused_variants_are_their_compositions(dtype):
    x, r = rand((5, 64), 7).to(dtype), rand((5, 64), 8).to(dtype)
    norm_w = rand((64,), 9).to(dtype)
    wq, wscale = weights(40, 64, 32, 10)
    out, summed = OPS["fp8_norm_linear"].native(x, r, norm_w, 1e-6, wq, wscale, None, 32)
    normed = OPS["rms_norm"].native(x + r, norm_w, 1e-6)
    assert torch.equal(out, OPS["fp8_linear"].native(normed, wq, wscale, None, 32)) and torch.equal(summed, x + r)
    assert out.dtype == dtype
    gate_up = rand((5, 128), 11).to(dtype)
    act = OPS["silu_and_mul"].native(gate_up)
    assert torch.equal(OPS["fp8_silu_mul_linear"].native(gate_up, wq, wscale, None, 32),
                       OPS["fp8_linear"].native(act, wq, wscale, None, 32))
