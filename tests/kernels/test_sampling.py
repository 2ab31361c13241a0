"""sample: every provider against the native function, token for token.

Random logits have no ties, so every impl must pick exactly the native token: greedy rows,
and sampled rows with top-k, top-p, both and neither, at several temperatures and vocab sizes.
"""

import pytest
import torch

from harness import providers, run

from llmc.aot.ir import OPS

# (top_k, top_p) per sampled row: neither, top-k only, top-p only, both, and edge values
FILTERS = [(0, 1.0), (1, 1.0), (5, 1.0), (50, 1.0), (0, 0.9), (0, 0.3), (0, 0.999), (20, 0.8), (3, 0.95),
           (10_000_000, 1.0), (-1, 0.5)]


def _rows(vocab, seed, greedy_every=4, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    rows = len(FILTERS)
    logits = torch.randn(rows, vocab, generator=g) * scale
    temperature = torch.rand(rows, generator=g) * 1.5 + 0.3
    temperature[::greedy_every] = 0.0  # greedy rows
    top_k = torch.tensor([k for k, _ in FILTERS], dtype=torch.int32)
    top_p = torch.tensor([p for _, p in FILTERS], dtype=torch.float32)
    uniform = torch.rand(rows, generator=g)
    return logits, temperature, top_k, top_p, uniform


@pytest.mark.parametrize("provider", providers("sample"))
@pytest.mark.parametrize("vocab, seed", [(1, 0), (7, 1), (1000, 2), (3001, 3)])
def test_sample_matches_native(provider, vocab, seed):
    args = _rows(vocab, seed, greedy_every=3 + seed % 2)
    got = run("sample", provider, *args)
    want = OPS["sample"].native(*args)
    assert got.dtype == torch.int32 and got.shape == want.shape
    bad = (got != want).nonzero().flatten().tolist()
    assert not bad, f"sample {provider} V={vocab}: rows {bad} got {got[bad].tolist()}, native {want[bad].tolist()}"


@pytest.mark.parametrize("provider", providers("sample"))
def test_sample_peaked_and_flat(provider):
    # a peaked row (one token holds nearly all mass) and a nearly flat one, with many uniforms
    g = torch.Generator().manual_seed(7)
    vocab, rows = 1500, 8
    logits = torch.randn(rows, vocab, generator=g) * torch.tensor([[0.01], [8.0]]).repeat(rows // 2, 1)
    temperature = torch.full((rows,), 0.7)
    top_k = torch.tensor([0, 40, 0, 400, 7, 0, 0, 2], dtype=torch.int32)
    top_p = torch.tensor([0.5, 1.0, 0.95, 0.6, 1.0, 1.0, 0.7, 0.5])
    uniform = torch.linspace(0.0, 0.999, rows)
    got = run("sample", provider, logits, temperature, top_k, top_p, uniform)
    want = OPS["sample"].native(logits, temperature, top_k, top_p, uniform)
    assert torch.equal(got, want), f"sample {provider}: got {got.tolist()}, native {want.tolist()}"


@pytest.mark.parametrize("provider", providers("sample"))
def test_sample_greedy_ties_take_lowest_index(provider):
    logits = torch.zeros(3, 2500)
    logits[0, [17, 1300, 2400]] = 5.0
    logits[1, [2047, 2048]] = 1.0
    logits[2, :] = float("-inf")
    zeros = torch.zeros(3)
    got = run("sample", provider, logits, zeros, zeros.int(), torch.ones(3), zeros)
    assert got.tolist() == [17, 2047, 0]
