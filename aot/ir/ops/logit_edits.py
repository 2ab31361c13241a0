"""Per-request logit processing before sampling, as vLLM applies it: a token mask and sparse edits.

Semantics (every impl must match), on float32 logits [R, V]:
1. rows whose `bitmask_on` is nonzero keep only the tokens whose bit is set in `allowed_bitmask`
   (bit t % 32 of word t // 32); every other token becomes -inf (structured output);
2. each entry i of the edits with row r = edit_index[i, 0] >= 0 and token t = edit_index[i, 1] in
   [0, V), values (scale, bias, add) = edit_values[i], sets x = out[r, t] + bias, then
   out[r, t] = (x / scale if x > 0 else x * scale) + add.
   `bias` is logit_bias, `scale` the repetition penalty (1: none), `add` minus the presence and
   frequency penalties, or -inf to ban the token (min_tokens). At most one entry per (row, token).
The logits themselves are left as they are: the edited ones are a new tensor.
"""

import torch
from torch import Tensor

from ..op import register_op


def _edit_logits_fake(logits: Tensor, edit_index: Tensor, edit_values: Tensor, allowed_bitmask: Tensor,
                      bitmask_on: Tensor) -> Tensor:
    return logits.new_empty(logits.shape, dtype=torch.float32)


@register_op(fake=_edit_logits_fake)
def edit_logits(logits: Tensor, edit_index: Tensor, edit_values: Tensor, allowed_bitmask: Tensor,
                bitmask_on: Tensor) -> Tensor:
    # logits [R, V] float32; edit_index [E, 2] int32; edit_values [E, 3] float32;
    # allowed_bitmask [R, ceil(V / 32)] int32; bitmask_on [R] int32 -> [R, V] float32
    rows, vocab = logits.shape
    out = logits.float().clone()
    shifts = torch.arange(32, dtype=torch.int32)
    for r in bitmask_on.nonzero().flatten().tolist():
        bits = (allowed_bitmask[r, :, None] >> shifts) & 1
        allowed = bits.flatten()[:vocab].bool()
        out[r] = torch.where(allowed, out[r], float("-inf"))
    r, t = edit_index[:, 0].long(), edit_index[:, 1].long()
    valid = (r >= 0) & (r < rows) & (t >= 0) & (t < vocab)
    r, t = r[valid], t[valid]
    scale, bias, add = edit_values[valid].float().unbind(1)
    x = out[r, t] + bias
    out[r, t] = torch.where(x > 0, x / scale, x * scale) + add
    return out
