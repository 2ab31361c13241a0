"""Column concatenation and split: the glue that the merge passes add and remove."""

import torch
from torch import Tensor

from ..op import register_op


@register_op
def concat(tensors: list[Tensor]) -> Tensor:
    # [T, a], [T, b], ... -> [T, a + b + ...]
    return torch.cat(tensors, dim=-1)


def _split_fake(x: Tensor, sizes: list[int]) -> list[Tensor]:
    return [x.new_empty((x.shape[0], s)) for s in sizes]


@register_op(fake=_split_fake)
def split(x: Tensor, sizes: list[int]) -> list[Tensor]:
    # [T, sum(sizes)] -> [T, s] for s in sizes
    return [part.clone() for part in torch.split(x, sizes, dim=-1)]


@register_op
def add(x: Tensor, y: Tensor) -> Tensor:
    # elementwise x + y: the residual connection
    return x + y


@register_op
def scale(x: Tensor, factor: float) -> Tensor:
    # x * factor, the factor rounded to x's dtype first (Gemma's embedding scale)
    return x * torch.tensor(factor, dtype=x.dtype)


@register_op
def soft_cap(x: Tensor, cap: float) -> Tensor:
    # cap * tanh(x / cap), in float32 (Gemma 2's final logit soft-cap)
    return (torch.tanh(x.float() / cap) * cap).to(x.dtype)
