"""Log probabilities of the logits rows a step already has: the logprob of one target token per row
and the row's top tokens.

Semantics (every impl must match): lp = log_softmax(logits) in float32. A row's target token is
logprob_token_ids[r] when >= 0 (a prompt position: the next prompt token), else next_tokens[r] (the
token the step sampled). num_logprobs[r] < 0 skips the row: token_logprob 0 and no top tokens;
otherwise the first min(num_logprobs[r], MAX_LOGPROBS, V) top slots hold the tokens of the largest
logits, largest first and lowest id first on ties, with their lp. Empty slots hold id -1 and -inf.
"""

import torch
from torch import Tensor

from llmc.artifacts.plan_schema import MAX_LOGPROBS

from ..op import register_op


def _logprobs_fake(logits: Tensor, next_tokens: Tensor, logprob_token_ids: Tensor,
                   num_logprobs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    rows = logits.shape[0]
    return (logits.new_empty((rows,), dtype=torch.float32), logits.new_empty((rows, MAX_LOGPROBS), dtype=torch.int32),
            logits.new_empty((rows, MAX_LOGPROBS), dtype=torch.float32))


@register_op(fake=_logprobs_fake)
def logprobs(logits: Tensor, next_tokens: Tensor, logprob_token_ids: Tensor,
             num_logprobs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # logits [R, V] float32; next_tokens, logprob_token_ids, num_logprobs [R] int32 ->
    # (token_logprob [R] float32, top_ids [R, K] int32, top_logprobs [R, K] float32)
    rows, vocab = logits.shape
    lp = torch.log_softmax(logits.float(), dim=-1)
    target = torch.where(logprob_token_ids >= 0, logprob_token_ids, next_tokens).long().clamp(0, vocab - 1)
    token_logprob = lp.gather(1, target[:, None])[:, 0]
    top_ids = torch.full((rows, MAX_LOGPROBS), -1, dtype=torch.int32, device=logits.device)
    top_logprobs = torch.full((rows, MAX_LOGPROBS), float("-inf"), dtype=torch.float32, device=logits.device)
    for r in range(rows):
        n = min(int(num_logprobs[r]), MAX_LOGPROBS, vocab)
        if int(num_logprobs[r]) < 0:
            token_logprob[r] = 0.0
        if n <= 0:
            continue
        order = torch.sort(logits[r].float(), descending=True, stable=True).indices[:n]
        top_ids[r, :n] = order.to(torch.int32)
        top_logprobs[r, :n] = lp[r, order]
    return token_logprob, top_ids, top_logprobs
