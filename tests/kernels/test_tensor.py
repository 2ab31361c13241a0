"""concat and split: every kernel impl against the native functions."""

import torch
from harness import parametrize, run

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
WIDTHS = [(96, 80), (200, 32, 16), (1, 1500), (5, 7, 9, 11)]


def _tensors(dtype, tokens, widths):
    g = torch.Generator().manual_seed(tokens + sum(widths))
    return ([torch.randn(tokens, w, generator=g).to(dtype) for w in widths],)


def _split_args(dtype, tokens, widths):
    x = torch.randn(tokens, sum(widths), generator=torch.Generator().manual_seed(tokens + sum(widths))).to(dtype)
    return x, list(widths)


@parametrize("concat", _tensors, dtype=DTYPES, tokens=[1, 3, 7], widths=WIDTHS)
def test_concat(provider, dtype, tokens, widths):
    (tensors,) = _tensors(dtype, tokens, widths)
    out = run("concat", provider, tensors)
    assert torch.equal(out, OPS["concat"].native(tensors)), f"concat {provider} {widths}: copies must be exact"


@parametrize("split", _split_args, dtype=DTYPES, tokens=[1, 3, 7], widths=WIDTHS)
def test_split(provider, dtype, tokens, widths):
    x, sizes = _split_args(dtype, tokens, widths)
    parts = run("split", provider, x, sizes)
    want = OPS["split"].native(x, sizes)
    assert isinstance(parts, list) and len(parts) == len(want)
    for i, (got, expected) in enumerate(zip(parts, want)):
        assert torch.equal(got, expected), f"split {provider} {sizes}: part {i} differs"
