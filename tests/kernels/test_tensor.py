"""concat and split: every provider against the native functions."""

import pytest
import torch

from harness import providers, run

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("provider", providers("concat"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 7])
@pytest.mark.parametrize("widths", [(96, 80), (200, 32, 16), (1, 1500), (5, 7, 9, 11)])
def test_concat(provider, dtype, tokens, widths):
    g = torch.Generator().manual_seed(tokens + sum(widths))
    tensors = [torch.randn(tokens, w, generator=g).to(dtype) for w in widths]
    out = run("concat", provider, tensors)
    assert torch.equal(out, OPS["concat"].native(tensors)), f"concat {provider} {widths}: copies must be exact"


@pytest.mark.parametrize("provider", providers("split"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 7])
@pytest.mark.parametrize("sizes", [[96, 80], [200, 32, 16], [1, 1500], [5, 7, 9, 11]])
def test_split(provider, dtype, tokens, sizes):
    g = torch.Generator().manual_seed(tokens + sum(sizes))
    x = torch.randn(tokens, sum(sizes), generator=g).to(dtype)
    parts = run("split", provider, x, sizes)
    want = OPS["split"].native(x, sizes)
    assert isinstance(parts, list) and len(parts) == len(want)
    for i, (got, expected) in enumerate(zip(parts, want)):
        assert torch.equal(got, expected), f"split {provider} {sizes}: part {i} differs"
