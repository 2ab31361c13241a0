"""sample: every kernel impl against the native function, token for token.

Random logits have no ties, so every impl must pick exactly the native token: greedy rows,
and sampled rows with top-k, top-p, min-p, all and none, at several temperatures and vocab sizes.
"""

import torch
from harness import parametrize, run

from llmc.aot.ir import OPS

# (top_k, top_p, min_p) per sampled row: none, each alone, combinations, and edge values
FILTERS = [(0, 1.0, 0.0), (1, 1.0, 0.0), (5, 1.0, 0.0), (50, 1.0, 0.0), (0, 0.9, 0.0), (0, 0.3, 0.0), (0, 0.999, 0.0),
           (20, 0.8, 0.0), (3, 0.95, 0.0), (10_000_000, 1.0, 0.0), (-1, 0.5, 0.0), (0, 1.0, 0.05), (0, 1.0, 0.5),
           (0, 1.0, 1.0), (40, 0.9, 0.1), (0, 0.5, 0.02), (5, 1.0, 0.3)]


def _rows(case):
    vocab, seed = case
    g = torch.Generator().manual_seed(seed)
    rows = len(FILTERS)
    logits = torch.randn(rows, vocab, generator=g) * 3.0
    temperature = torch.rand(rows, generator=g) * 1.5 + 0.3
    temperature[:: 3 + seed % 2] = 0.0  # greedy rows
    top_k = torch.tensor([k for k, _, _ in FILTERS], dtype=torch.int32)
    top_p = torch.tensor([p for _, p, _ in FILTERS], dtype=torch.float32)
    min_p = torch.tensor([m for _, _, m in FILTERS], dtype=torch.float32)
    uniform = torch.rand(rows, generator=g)
    return logits, temperature, top_k, top_p, min_p, uniform


def _peaked_and_flat():
    # peaked rows (one token holds nearly all mass) and nearly flat ones, with many uniforms
    g = torch.Generator().manual_seed(7)
    vocab, rows = 1500, 8
    logits = torch.randn(rows, vocab, generator=g) * torch.tensor([[0.01], [8.0]]).repeat(rows // 2, 1)
    top_k = torch.tensor([0, 40, 0, 400, 7, 0, 0, 2], dtype=torch.int32)
    top_p = torch.tensor([0.5, 1.0, 0.95, 0.6, 1.0, 1.0, 0.7, 0.5])
    min_p = torch.tensor([0.0, 0.0, 0.0, 0.2, 0.9, 0.01, 0.0, 0.5])
    return logits, torch.full((rows,), 0.7), top_k, top_p, min_p, torch.linspace(0.0, 0.999, rows)


def _ties():
    logits = torch.zeros(3, 2500)
    logits[0, [17, 1300, 2400]] = 5.0
    logits[1, [2047, 2048]] = 1.0
    logits[2, :] = float("-inf")
    zeros = torch.zeros(3)
    return logits, zeros, zeros.int(), torch.ones(3), zeros, zeros


@parametrize("sample", _rows, case=[(1, 0), (7, 1), (1000, 2), (3001, 3)])  # (vocab, seed)
def test_sample_matches_native(provider, case):
    args = _rows(case)
    vocab = case[0]
    got = run("sample", provider, *args)
    want = OPS["sample"].native(*args)
    assert got.dtype == torch.int32 and got.shape == want.shape
    bad = (got != want).nonzero().flatten().tolist()
    assert not bad, f"sample {provider} V={vocab}: rows {bad} got {got[bad].tolist()}, native {want[bad].tolist()}"


@parametrize("sample", _peaked_and_flat)
def test_sample_peaked_and_flat(provider):
    args = _peaked_and_flat()
    got, want = run("sample", provider, *args), OPS["sample"].native(*args)
    assert torch.equal(got, want), f"sample {provider}: got {got.tolist()}, native {want.tolist()}"


@parametrize("sample", _ties)
def test_sample_greedy_ties_take_lowest_index(provider):
    assert run("sample", provider, *_ties()).tolist() == [17, 2047, 0]
