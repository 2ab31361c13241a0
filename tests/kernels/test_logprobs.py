"""logprobs: every kernel impl against the native function.

Target logprobs and top logprobs within the float32 tolerance, top token ids exactly: random rows,
rows asking for no, some, all and more than MAX_LOGPROBS slots, skipped rows, ties, -inf logits and
vocabularies smaller than the slots.
"""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS
from llmc.aot.ir.ops.logprobs import MAX_LOGPROBS

ASKED = [0, 1, 5, MAX_LOGPROBS, 64, -1, 2, 19]  # top slots per row; -1 skips the row


def _rows(case):
    vocab, seed = case
    g = torch.Generator().manual_seed(seed)
    rows = len(ASKED)
    logits = torch.randn(rows, vocab, generator=g) * 4.0
    next_tokens = torch.randint(0, vocab, (rows,), generator=g, dtype=torch.int32)
    targets = torch.randint(0, vocab, (rows,), generator=g, dtype=torch.int32)
    targets[::2] = -1  # sampled rows: the target is next_tokens
    return logits, next_tokens, targets, torch.tensor(ASKED, dtype=torch.int32)


def _ties():
    logits = torch.zeros(4, 2500)
    logits[0, [17, 1300, 2400]] = 5.0
    logits[1, [2047, 2048]] = 1.0
    logits[2, :] = float("-inf")
    logits[2, [5, 2499]] = 0.0
    logits[3, 1024:] = float("-inf")
    rows = torch.tensor([4, 2, 1000, 7], dtype=torch.int32)
    return logits, rows, torch.full((4,), -1, dtype=torch.int32), torch.full((4,), MAX_LOGPROBS, dtype=torch.int32)


def _check(provider, args, what):
    got, want = run("logprobs", provider, *args), OPS["logprobs"].native(*args)
    assert_close(got[0], want[0], torch.float32, f"{what} token_logprob")
    assert got[1].dtype == torch.int32 and torch.equal(got[1], want[1]), \
        f"{what} top_ids: got {got[1].tolist()}, native {want[1].tolist()}"
    assert_close(got[2], want[2], torch.float32, f"{what} top_logprobs")


@parametrize("logprobs", _rows, case=[(1, 0), (7, 1), (1000, 2), (3001, 3)])  # (vocab, seed)
def test_logprobs_match_native(provider, case):
    _check(provider, _rows(case), f"logprobs {provider} V={case[0]}")


@parametrize("logprobs", _ties)
def test_logprobs_ties_take_lowest_id(provider):
    _check(provider, _ties(), f"logprobs {provider} ties")
    ids = run("logprobs", provider, *_ties())[1]
    assert ids[0, :4].tolist() == [17, 1300, 2400, 0] and ids[1, :3].tolist() == [2047, 2048, 0]
    assert ids[2, :3].tolist() == [5, 2499, 0]
