"""rms_norm, fused_add_rms_norm and head_rms_norm: every kernel impl against the native function."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _inputs(tokens, width, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(tokens, width, generator=g) * 3).to(dtype)
    weight = (1 + 0.5 * torch.randn(width, generator=g)).to(dtype)
    return x, weight, g


def _rms_args(dtype, shape):
    x, weight, _ = _inputs(*shape, dtype, seed=shape[0] * shape[1])
    return x, weight, 1e-6


def _add_args(dtype, shape):
    x, weight, g = _inputs(*shape, dtype, seed=shape[0] + shape[1])
    return x, torch.randn(shape, generator=g).to(dtype), weight, 1e-5


def _head_args(dtype, shape):
    tokens, heads, head_dim = shape
    x, _, g = _inputs(tokens, heads * head_dim, dtype, seed=heads * head_dim)
    return x, (1 + 0.5 * torch.randn(head_dim, generator=g)).to(dtype), 1e-6, head_dim


@parametrize("rms_norm", _rms_args, dtype=DTYPES, shape=[(1, 96), (3, 80), (7, 200), (2, 4100)])
def test_rms_norm(provider, dtype, shape):
    args = _rms_args(dtype, shape)
    assert_close(run("rms_norm", provider, *args), OPS["rms_norm"].native(*args), dtype, f"rms_norm {provider} {shape}")


@parametrize("fused_add_rms_norm", _add_args, dtype=DTYPES, shape=[(1, 96), (3, 80), (7, 200)])
def test_fused_add_rms_norm(provider, dtype, shape):
    args = _add_args(dtype, shape)
    normed, summed = run("fused_add_rms_norm", provider, *args)
    want_normed, want_summed = OPS["fused_add_rms_norm"].native(*args)
    assert_close(summed, want_summed, dtype, f"fused_add_rms_norm {provider} summed {shape}")
    assert_close(normed, want_normed, dtype, f"fused_add_rms_norm {provider} normed {shape}")


@parametrize("head_rms_norm", _head_args, dtype=DTYPES,
             shape=[(1, 6, 32), (3, 4, 64), (7, 1, 16), (2, 5, 80), (3, 40, 128)])  # (tokens, heads, head_dim)
def test_head_rms_norm(provider, dtype, shape):
    args = _head_args(dtype, shape)
    want = OPS["head_rms_norm"].native(*args)
    assert_close(run("head_rms_norm", provider, *args), want, dtype, f"head_rms_norm {provider} {shape}")
