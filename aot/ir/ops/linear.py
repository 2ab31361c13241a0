"""Matrix products: linear layers, the token embedding gather and the LM head."""

from typing import Optional

import torch
from torch import Tensor

from ..op import register_op


@register_op
def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    # [T, K] @ [N, K]^T (+ [N]) -> [T, N]
    return torch.nn.functional.linear(x, weight, bias)


@register_op
def embedding(input_ids: Tensor, weight: Tensor) -> Tensor:
    # [T] int32, [V, H] -> [T, H]
    return weight[input_ids.long()]


def _lm_head_fake(x: Tensor, weight: Tensor, logits_indices: Tensor) -> Tensor:
    return x.new_empty((logits_indices.shape[0], weight.shape[0]), dtype=torch.float32)


@register_op(fake=_lm_head_fake)
def lm_head(x: Tensor, weight: Tensor, logits_indices: Tensor) -> Tensor:
    # rows logits_indices of [T, H] @ [V, H]^T -> [R, V] float32 logits
    return torch.nn.functional.linear(x[logits_indices.long()], weight).float()
