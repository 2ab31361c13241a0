"""edit_logits: every kernel impl against the native function, element for element.

Rows with and without the allow-mask, edits of every kind (repetition scale on positive and
negative logits, logit_bias before it, penalties and -inf bans after it), padding entries
(row -1) and entries outside the logits, on vocab sizes that are not multiples of 32 or of a block.
"""

import torch
from harness import parametrize, run

from llmc.aot.ir import OPS


def _case(case):
    rows, vocab, edits, seed = case
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=g) * 4.0
    words = -(-vocab // 32)
    bitmask = torch.randint(-(2**31), 2**31 - 1, (rows, words), generator=g, dtype=torch.int64).to(torch.int32)
    bitmask_on = (torch.arange(rows) % 2).to(torch.int32)  # every other row is masked
    flat = torch.randperm(rows * vocab, generator=g)[:edits]  # distinct (row, token) pairs
    index = torch.stack([flat // vocab, flat % vocab], 1).to(torch.int32)
    index[::7, 0] = -1  # padding
    index[3::11, 1] = vocab + 5  # past the vocabulary: ignored
    scale = torch.rand(edits, generator=g) * 1.5 + 0.5
    bias = torch.randn(edits, generator=g) * 2.0
    add = -torch.rand(edits, generator=g) * 2.0
    add[5::13] = float("-inf")  # banned (min_tokens)
    values = torch.stack([scale, bias, add], 1)
    return logits, index, values, bitmask, bitmask_on


CASES = [(1, 37, 5, 0), (3, 1000, 40, 1), (6, 3001, 700, 2), (2, 32, 0, 3)]


@parametrize("edit_logits", _case, case=CASES)  # (rows, vocab, edits, seed)
def test_edit_logits_matches_native(provider, case):
    args = _case(case)
    got = run("edit_logits", provider, *args)
    want = OPS["edit_logits"].native(*args)
    assert got.dtype == torch.float32 and got.shape == want.shape
    same = (got == want) | (torch.isnan(got) & torch.isnan(want)) | torch.isclose(got, want, rtol=1e-6, atol=1e-6)
    bad = (~same).nonzero().tolist()
    assert not bad, f"edit_logits {provider} {case}: {len(bad)} elements differ, first {bad[0]}: " \
                    f"got {got[tuple(bad[0])].item()}, native {want[tuple(bad[0])].item()}"


def test_native_semantics_by_hand():
    logits = torch.tensor([[2.0, -2.0, 0.5, 1.0, 3.0]])
    index = torch.tensor([[0, 0], [0, 1], [0, 2], [0, 3], [-1, 4]], dtype=torch.int32)
    values = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, -0.5], [1.0, -1.0, 0.0], [1.0, 0.0, float("-inf")],
                           [9.0, 9.0, 9.0]])
    bitmask = torch.tensor([[0b10111]], dtype=torch.int32)  # token 3 not allowed
    got = OPS["edit_logits"].native(logits, index, values, bitmask, torch.ones(1, dtype=torch.int32))
    assert got.tolist() == [[1.0, -4.5, -0.5, float("-inf"), 3.0]]
    assert logits.tolist() == [[2.0, -2.0, 0.5, 1.0, 3.0]]  # left as it was
