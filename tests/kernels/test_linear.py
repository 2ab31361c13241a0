"""`linear` and `lm_head`: every kernel impl against the native function, through Triton's interpreter."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def make(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def small_blocks(provider) -> dict:
    """Constexpr overrides that force several K steps (and, for the GEMMs, grouped row tiles)."""
    return {"BLOCK_K": 32} if provider == "triton_gemv" else {"BLOCK_K": 32, "GROUP_M": 2}


def _linear_args(dtype, m, nk, has_bias):
    n, k = nk
    return make((m, k), dtype, 1), make((n, k), dtype, 2) / k**0.5, make((n,), dtype, 3) if has_bias else None


def _k_loop_args(dtype, m):
    # several K steps, the last one partial; (M=70) several row and column tiles, rows wrapping around
    return make((m, 80), dtype, 4), make((144, 80), dtype, 5) / 9, make((144,), dtype, 6)


def _lm_head_args(dtype, rows, shape):
    vocab, hidden = shape
    x, weight = make((rows + 5, hidden), dtype, 7), make((vocab, hidden), dtype, 8) / hidden**0.5
    indices = torch.randint(0, rows + 5, (rows,), generator=torch.Generator().manual_seed(9), dtype=torch.int32)
    indices[0] = rows + 4  # the last row, and (rows > 1) a repeat
    indices[-1] = rows + 4
    return x, weight, indices


@parametrize("linear", _linear_args, dtype=DTYPES, m=[1, 3, 17], nk=[(24, 48), (56, 80)], has_bias=[False, True])
def test_linear(provider, dtype, m, nk, has_bias):
    args = _linear_args(dtype, m, nk, has_bias)
    assert_close(run("linear", provider, *args), OPS["linear"].native(*args), dtype, provider)


@parametrize("linear", _k_loop_args, dtype=DTYPES, m=[1, 5, 70])
def test_linear_k_loop(provider, dtype, m):
    args = _k_loop_args(dtype, m)
    expected = OPS["linear"].native(*args)
    small = small_blocks(provider)
    assert_close(run("linear", provider, *args, **small), expected, dtype, f"{provider} {small}")
    assert_close(run("linear", provider, *args), expected, dtype, provider)


@parametrize("lm_head", _lm_head_args, dtype=DTYPES, rows=[1, 3, 17, 66], shape=[(56, 80), (112, 48)])
def test_lm_head(provider, dtype, rows, shape):
    args = _lm_head_args(dtype, rows, shape)
    # native computes in the input dtype, then widens: compare at that dtype's tolerance
    assert_close(run("lm_head", provider, *args), OPS["lm_head"].native(*args), dtype, provider)
