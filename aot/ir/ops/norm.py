"""RMS normalisation: plain, fused with the residual add, and per attention head (q/k norm)."""

import torch
from torch import Tensor

from ..op import register_op


@register_op
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # [T, H] -> [T, H]; statistics in float32, scale applied in the input dtype (as HF does)
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(x.dtype)


def _fused_add_rms_norm_fake(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x)


@register_op(fake=_fused_add_rms_norm_fake)
def fused_add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    # returns (rms_norm(x + residual), x + residual)
    summed = x + residual
    return rms_norm.native(summed, weight, eps), summed


@register_op
def head_rms_norm(x: Tensor, weight: Tensor, eps: float, head_dim: int) -> Tensor:
    # [T, heads * head_dim] -> same; each head normalised on its own (Qwen3 q_norm / k_norm)
    tokens = x.shape[0]
    return rms_norm.native(x.reshape(tokens, -1, head_dim), weight, eps).reshape(x.shape)
