"""`linear` and `lm_head`: every kernel impl against the native function, through Triton's interpreter."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
from harness import run_poisoned
from tolerances import assert_close

import llmc.kernels.linear  # noqa: F401  (registers the impls)
from llmc.aot.ir import OPS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def providers(op):
    return [name for name, impl in OPS[op].impls.items() if impl.launches]


def make(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("provider", providers("linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 3, 17])
@pytest.mark.parametrize("n,k", [(24, 48), (56, 80)])
@pytest.mark.parametrize("has_bias", [False, True])
def test_linear(provider, dtype, m, n, k, has_bias):
    x, weight = make((m, k), dtype, 1), make((n, k), dtype, 2) / k**0.5
    bias = make((n,), dtype, 3) if has_bias else None
    impl = OPS["linear"].impls[provider]
    if not impl.supports(x, weight, bias):
        pytest.skip(f"{provider} does not take M={m}")
    assert_close(run_poisoned(impl, (x, weight, bias)), OPS["linear"].native(x, weight, bias), dtype, provider)


@pytest.mark.parametrize("provider", providers("linear"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("m", [1, 5, 70])
def test_linear_k_loop(provider, dtype, m):
    # several K steps, the last one partial; (M=70) several row and column tiles, rows wrapping around
    x, weight, bias = make((m, 80), dtype, 4), make((144, 80), dtype, 5) / 9, make((144,), dtype, 6)
    impl = OPS["linear"].impls[provider]
    if not impl.supports(x, weight, bias):
        pytest.skip(f"{provider} does not take M={m}")
    small = {"BLOCK_K": 32} if provider == "triton_gemv" else {"BLOCK_K": 32, "GROUP_M": 2}
    expected = OPS["linear"].native(x, weight, bias)
    assert_close(run_poisoned(impl, (x, weight, bias), **small), expected, dtype, f"{provider} {small}")
    assert_close(run_poisoned(impl, (x, weight, bias)), expected, dtype, provider)


@pytest.mark.parametrize("provider", providers("lm_head"))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("rows", [1, 3, 17, 66])
@pytest.mark.parametrize("vocab,hidden", [(56, 80), (112, 48)])
def test_lm_head(provider, dtype, rows, vocab, hidden):
    x, weight = make((rows + 5, hidden), dtype, 7), make((vocab, hidden), dtype, 8) / hidden**0.5
    indices = torch.randint(0, rows + 5, (rows,), generator=torch.Generator().manual_seed(9), dtype=torch.int32)
    indices[0] = rows + 4  # the last row, and (rows > 1) a repeat
    indices[-1] = rows + 4
    impl = OPS["lm_head"].impls[provider]
    if not impl.supports(x, weight, indices):
        pytest.skip(f"{provider} does not take {rows} rows")
    # native computes in the input dtype, then widens: compare at that dtype's tolerance
    assert_close(run_poisoned(impl, (x, weight, indices)), OPS["lm_head"].native(x, weight, indices), dtype, provider)
