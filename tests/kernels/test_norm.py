"""rms_norm, fused_add_rms_norm and head_rms_norm: every provider against the native function."""

import pytest
import torch

from harness import providers, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _inputs(tokens, width, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(tokens, width, generator=g) * 3).to(dtype)
    weight = (1 + 0.5 * torch.randn(width, generator=g)).to(dtype)
    return x, weight, g


@pytest.mark.parametrize("provider", providers("rms_norm"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, hidden", [(1, 96), (3, 80), (7, 200), (2, 4100)])
def test_rms_norm(provider, dtype, tokens, hidden):
    x, weight, _ = _inputs(tokens, hidden, dtype, seed=tokens * hidden)
    out = run("rms_norm", provider, x, weight, 1e-6)
    assert_close(out, OPS["rms_norm"].native(x, weight, 1e-6), dtype, f"rms_norm {provider} [{tokens}, {hidden}]")


@pytest.mark.parametrize("provider", providers("fused_add_rms_norm"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, hidden", [(1, 96), (3, 80), (7, 200)])
def test_fused_add_rms_norm(provider, dtype, tokens, hidden):
    x, weight, g = _inputs(tokens, hidden, dtype, seed=tokens + hidden)
    residual = torch.randn(tokens, hidden, generator=g).to(dtype)
    normed, summed = run("fused_add_rms_norm", provider, x, residual, weight, 1e-5)
    want_normed, want_summed = OPS["fused_add_rms_norm"].native(x, residual, weight, 1e-5)
    assert_close(summed, want_summed, dtype, f"fused_add_rms_norm {provider} summed [{tokens}, {hidden}]")
    assert_close(normed, want_normed, dtype, f"fused_add_rms_norm {provider} normed [{tokens}, {hidden}]")


@pytest.mark.parametrize("provider", providers("head_rms_norm"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens, heads, head_dim", [(1, 6, 32), (3, 4, 64), (7, 1, 16), (2, 5, 80), (3, 40, 128)])
def test_head_rms_norm(provider, dtype, tokens, heads, head_dim):
    x, _, g = _inputs(tokens, heads * head_dim, dtype, seed=heads * head_dim)
    weight = (1 + 0.5 * torch.randn(head_dim, generator=g)).to(dtype)
    out = run("head_rms_norm", provider, x, weight, 1e-6, head_dim)
    want = OPS["head_rms_norm"].native(x, weight, 1e-6, head_dim)
    assert_close(out, want, dtype, f"head_rms_norm {provider} [{tokens}, {heads}x{head_dim}]")
