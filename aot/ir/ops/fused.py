"""Linear layers with their producer folded into the A operand's prologue.

`norm_linear` reads the residual stream and normalises it on the way into the matrix product;
`silu_mul_linear` and `gelu_tanh_mul_linear` read the merged [gate | up] projection and gate it
on the way in. Each is
exactly the unfused pair of ops, so the natives below are compositions of theirs.
"""

from typing import Optional

import torch
from torch import Tensor

from ..op import register_op
from .activation import gelu_tanh_and_mul, silu_and_mul
from .linear import linear
from .norm import rms_norm


def _norm_linear_fake(x: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, weight: Tensor,
                      bias: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    return x.new_empty((x.shape[0], weight.shape[0])), torch.empty_like(x)


@register_op(fake=_norm_linear_fake)
def norm_linear(x: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, weight: Tensor,
                bias: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    # returns (linear(rms_norm(x + residual), W, b), x + residual); without a residual, (..., copy of x)
    summed = x.clone() if residual is None else x + residual
    return linear.native(rms_norm.native(summed, norm_weight, eps), weight, bias), summed


def _silu_mul_linear_fake(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]))


@register_op(fake=_silu_mul_linear_fake)
def silu_mul_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    # [T, 2K] gate | up, [N, K] -> [T, N]: linear(silu(gate) * up, W, b)
    return linear.native(silu_and_mul.native(x), weight, bias)


@register_op(fake=_silu_mul_linear_fake)
def gelu_tanh_mul_linear(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    # [T, 2K] gate | up, [N, K] -> [T, N]: linear(gelu_tanh(gate) * up, W, b)
    return linear.native(gelu_tanh_and_mul.native(x), weight, bias)
