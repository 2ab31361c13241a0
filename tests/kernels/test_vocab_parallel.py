"""vocab_parallel_embedding: every kernel impl against the native masked gather."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS


def _args(dtype, shape, start):
    tokens, vocab, rows, hidden = shape
    g = torch.Generator().manual_seed(tokens * hidden + start)
    weight = torch.randn(rows, hidden, generator=g).to(dtype)
    input_ids = torch.randint(0, vocab, (tokens,), generator=g, dtype=torch.int32)
    input_ids[0] = min(start + rows - 1, vocab - 1)  # this rank's last row
    input_ids[-1] = start + rows if start + rows < vocab else max(start - 1, 0)  # just outside the slice
    return input_ids, weight, torch.tensor([start], dtype=torch.int32)


@parametrize("vocab_parallel_embedding", _args, dtype=[torch.float32, torch.bfloat16],
             shape=[(5, 44, 11, 96), (9, 150, 50, 80), (4, 2000, 500, 1500)], start=[0, 11, 44, 100])
def test_vocab_parallel_embedding(provider, dtype, shape, start):
    input_ids, weight, vocab_start = _args(dtype, shape, start)
    out = run("vocab_parallel_embedding", provider, input_ids, weight, vocab_start)
    expected = OPS["vocab_parallel_embedding"].native(input_ids, weight, vocab_start)
    assert_close(out, expected, dtype, f"vocab_parallel_embedding {provider}")
    assert torch.equal(out, expected), "a masked gather must copy rows (and zeros) exactly"


def test_ranks_together_give_the_whole_embedding():
    vocab, hidden, size = 12, 5, 3
    table = torch.randn(vocab, hidden)
    ids = torch.tensor([0, 3, 4, 11, 7], dtype=torch.int32)
    parts = [OPS["vocab_parallel_embedding"].native(ids, table[r * 4:(r + 1) * 4], torch.tensor([r * 4], dtype=torch.int32))
             for r in range(size)]
    assert torch.equal(sum(parts), table[ids.long()])
    assert all(int((p != 0).any(dim=1).sum()) == int(((ids >= r * 4) & (ids < r * 4 + 4)).sum()) for r, p in enumerate(parts))
