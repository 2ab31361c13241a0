"""FP8 linear layers: e4m3 weights with float32 scales, activations quantized dynamically.

`weight` is [N, K] float8_e4m3fn and `weight_scale` [N, ceil(K / G)] float32: row n, columns
[g*G, (g+1)*G) of the weight are worth `weight * weight_scale[n, g]`. `group_size` G is 0 for
per-channel (and per-tensor, whose scale ingest repeats per row) weights, [N, 1], whose
activation is quantized per token; G > 0 for block-wise weights, whose activation is quantized
per 1 x G group (a weight block's rows are each given its scale, so [G, G] blocks are [1, G]).
Quantizing rounds x / scale to nearest e4m3 with saturation at +-448, scale = amax / 448.
The products are taken in float32 and the result has x's dtype.
"""

from typing import Optional

import torch
from torch import Tensor

from ..op import register_op
from .activation import silu_and_mul
from .norm import rms_norm

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
MIN_SCALE = 1e-12  # an all-zero row or group gets this scale, not 0 (no 0 / 0)


def quantize_fp8(x: Tensor, group_size: int) -> tuple[Tensor, Tensor]:
    """x [T, K] -> (e4m3 [T, K], float32 scales [T, ceil(K / G)] or [T, 1] for G = 0)."""
    if not group_size:  # per row, in three passes over x (the build quantizes every linear weight this way)
        scale = row_scales_fp8(x)
        q = x.to(torch.float32, copy=True).div_(scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
        return q, scale
    xf = x.float()
    t, k = xf.shape
    g = group_size
    groups = -(-k // g)
    padded = torch.nn.functional.pad(xf, (0, groups * g - k)).reshape(t, groups, g)
    scale = (padded.abs().amax(-1) / FP8_MAX).clamp_min(MIN_SCALE)  # [T, groups]
    q = (padded / scale[..., None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.reshape(t, groups * g)[:, :k], scale


def row_scales_fp8(x: Tensor) -> Tensor:
    """quantize_fp8(x, 0)'s scales [T, 1] alone: the largest |x| of each row is exact in x's dtype."""
    return (x.abs().amax(-1, keepdim=True).float() / FP8_MAX).clamp_min(MIN_SCALE)


def dequantize_fp8(q: Tensor, scale: Tensor, group_size: int) -> Tensor:
    """e4m3 [R, K] with scales [R, ceil(K / G)] ([R, 1] for G = 0) -> float32."""
    k = q.shape[1]
    return q.float() * scale.float().repeat_interleave(group_size or k, dim=1)[:, :k]


def _fp8_linear_fake(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Optional[Tensor], group_size: int) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]))


@register_op(fake=_fp8_linear_fake)
def fp8_linear(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Optional[Tensor], group_size: int) -> Tensor:
    # [T, K] quantized as declared, @ dequantized [N, K]^T (+ [N]) in float32 -> [T, N] in x's dtype
    q, scale = quantize_fp8(x, group_size)
    y = torch.nn.functional.linear(dequantize_fp8(q, scale, group_size), dequantize_fp8(weight, weight_scale, group_size))
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def _fp8_norm_linear_fake(x: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, weight: Tensor,
                          weight_scale: Tensor, bias: Optional[Tensor], group_size: int) -> tuple[Tensor, Tensor]:
    return x.new_empty((x.shape[0], weight.shape[0])), torch.empty_like(x)


@register_op(fake=_fp8_norm_linear_fake)
def fp8_norm_linear(x: Tensor, residual: Optional[Tensor], norm_weight: Tensor, eps: float, weight: Tensor,
                    weight_scale: Tensor, bias: Optional[Tensor], group_size: int) -> tuple[Tensor, Tensor]:
    # (fp8_linear(rms_norm(x + residual)), x + residual): the norm's output feeds the activation quantizer
    summed = x.clone() if residual is None else x + residual
    return fp8_linear.native(rms_norm.native(summed, norm_weight, eps), weight, weight_scale, bias, group_size), summed


def _fp8_silu_mul_linear_fake(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Optional[Tensor],
                              group_size: int) -> Tensor:
    return x.new_empty((x.shape[0], weight.shape[0]))


@register_op(fake=_fp8_silu_mul_linear_fake)
def fp8_silu_mul_linear(x: Tensor, weight: Tensor, weight_scale: Tensor, bias: Optional[Tensor], group_size: int) -> Tensor:
    # [T, 2K] gate | up -> fp8_linear(silu(gate) * up)
    return fp8_linear.native(silu_and_mul.native(x), weight, weight_scale, bias, group_size)
