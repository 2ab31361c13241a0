"""Sampling the next token from logits, reproducibly: the caller supplies the uniform draw.

Semantics (every impl must match): temperature <= 0 is greedy (argmax, lowest index on ties).
Otherwise p = softmax(logits / temperature); the kept set is the tokens whose probability is at
least the k-th largest (top_k > 0), at least the smallest probability in the shortest prefix of
descending probabilities whose mass reaches top_p (top_p < 1), and at least min_p times the
largest probability (min_p > 0). The token is the first one, in vocabulary order, at which the
running sum of kept probabilities exceeds uniform * (their total).
"""

import torch
from torch import Tensor

from ..op import register_op


def _sample_fake(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor,
                 uniform: Tensor) -> Tensor:
    return logits.new_empty((logits.shape[0],), dtype=torch.int32)


@register_op(fake=_sample_fake)
def sample(logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, min_p: Tensor, uniform: Tensor) -> Tensor:
    # logits [R, V] float32; temperature, top_p, min_p, uniform [R] float32; top_k [R] int32 -> [R] int32
    out = torch.argmax(logits, dim=-1).to(torch.int32)
    for r in range(logits.shape[0]):
        t = float(temperature[r])
        if t <= 0:
            continue
        probs = torch.softmax(logits[r].float() / t, dim=-1)
        ordered = torch.sort(probs, descending=True).values
        threshold = ordered[-1]
        k = int(top_k[r])
        if 0 < k < probs.numel():
            threshold = torch.maximum(threshold, ordered[k - 1])
        p = float(top_p[r])
        if p < 1.0:
            before = torch.cumsum(ordered, 0) - ordered
            threshold = torch.maximum(threshold, ordered[before < p][-1])
        m = float(min_p[r])
        if m > 0:
            threshold = torch.maximum(threshold, m * ordered[0])
        kept = torch.where(probs >= threshold, probs, torch.zeros_like(probs))
        running = torch.cumsum(kept, 0)
        target = float(uniform[r]) * running[-1]
        index = int(torch.searchsorted(running, target.reshape(1), right=True)[0])
        out[r] = min(index, probs.numel() - 1)
    return out
