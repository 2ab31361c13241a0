"""embedding: every kernel impl against the native gather."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS


def _args(dtype, shape):
    tokens, vocab, hidden = shape
    g = torch.Generator().manual_seed(tokens * hidden)
    weight = torch.randn(vocab, hidden, generator=g).to(dtype)
    input_ids = torch.randint(0, vocab, (tokens,), generator=g, dtype=torch.int32)
    input_ids[0] = vocab - 1  # the last row too
    return input_ids, weight


@parametrize("embedding", _args, dtype=[torch.float32, torch.bfloat16, torch.float16],
             shape=[(1, 11, 96), (3, 50, 80), (7, 37, 200), (5, 9, 2500)])
def test_embedding(provider, dtype, shape):
    input_ids, weight = _args(dtype, shape)
    out = run("embedding", provider, input_ids, weight)
    assert_close(out, OPS["embedding"].native(input_ids, weight), dtype, f"embedding {provider}")
    assert torch.equal(out, weight[input_ids.long()]), "a gather must copy rows exactly"
