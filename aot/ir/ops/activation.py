"""Gated activations."""

import torch
from torch import Tensor

from ..op import register_op


def _silu_and_mul_fake(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], x.shape[1] // 2))


@register_op(fake=_silu_and_mul_fake)
def silu_and_mul(x: Tensor) -> Tensor:
    # [T, 2I] -> [T, I]: silu(gate) * up, gate first
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate) * up


@register_op(fake=_silu_and_mul_fake)
def gelu_tanh_and_mul(x: Tensor) -> Tensor:
    # [T, 2I] -> [T, I]: gelu_tanh(gate) * up, gate first (Gemma's GeGLU)
    gate, up = x.chunk(2, dim=-1)
    return torch.nn.functional.gelu(gate, approximate="tanh") * up
