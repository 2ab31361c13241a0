"""The vocab-parallel embedding: each tensor-parallel rank holds rows [vocab_start, vocab_start + V/N)
of the table and gathers only the ids in that range; the ranks' outputs are then summed by
`all_reduce`, so every id is looked up by exactly one rank."""

import torch
from torch import Tensor

from ..op import register_op


def _vocab_parallel_embedding_fake(input_ids: Tensor, weight: Tensor, vocab_start: Tensor) -> Tensor:
    return weight.new_empty((input_ids.shape[0], weight.shape[1]))


@register_op(fake=_vocab_parallel_embedding_fake)
def vocab_parallel_embedding(input_ids: Tensor, weight: Tensor, vocab_start: Tensor) -> Tensor:
    # [T] int32, [V/N, H], [1] int32 -> [T, H]: row input_ids - vocab_start, zeros where that is outside [0, V/N)
    local = input_ids.long() - vocab_start.long()
    inside = (local >= 0) & (local < weight.shape[0])
    rows = weight[local.clamp(0, weight.shape[0] - 1)]
    return torch.where(inside[:, None], rows, torch.zeros((), dtype=weight.dtype))
