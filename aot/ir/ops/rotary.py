"""Rotary position embedding (neox / HF `rotate_half` layout), alone and fused with the KV write.

The scaling variant (default, linear, llama3) only changes the build-time `cos_sin_cache`
(see `aot/rope.py`); the ops read cos and sin of every position from it.
"""

from typing import Optional

import torch
from torch import Tensor

from ..op import register_op
from .cache import kv_cache_write
from .norm import head_rms_norm


def _rotate(x: Tensor, positions: Tensor, cos_sin_cache: Tensor, head_dim: int) -> Tensor:
    # the first cos_sin_cache.shape[1] dims of each head rotate (all of them but with partial rotary)
    tokens, rot = x.shape[0], cos_sin_cache.shape[1]
    cos, sin = cos_sin_cache[positions.long()].chunk(2, dim=-1)  # [T, rot/2] each, float32
    cos = torch.cat((cos, cos), dim=-1).to(x.dtype)[:, None, :]
    sin = torch.cat((sin, sin), dim=-1).to(x.dtype)[:, None, :]
    heads = x.reshape(tokens, -1, head_dim)
    part, rest = heads[..., :rot], heads[..., rot:]
    first, second = part.chunk(2, dim=-1)
    rotated = torch.cat((-second, first), dim=-1)
    return torch.cat((part * cos + rotated * sin, rest), dim=-1).reshape(x.shape)


def _rotary_fake(q: Tensor, k: Tensor, positions: Tensor, cos_sin_cache: Tensor, head_dim: int) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), torch.empty_like(k)


@register_op(fake=_rotary_fake)
def rotary_embedding(
    q: Tensor, k: Tensor, positions: Tensor, cos_sin_cache: Tensor, head_dim: int
) -> tuple[Tensor, Tensor]:
    # q [T, Hq*hd], k [T, Hk*hd], positions [T], cos_sin_cache [P, rot] (cos | sin), rot <= hd -> rotated q, k
    return _rotate(q, positions, cos_sin_cache, head_dim), _rotate(k, positions, cos_sin_cache, head_dim)


def _qkv_rope_cache_fake(
    qkv: Tensor, positions: Tensor, cos_sin_cache: Tensor, q_norm_weight: Optional[Tensor],
    k_norm_weight: Optional[Tensor], k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor,
    num_q_heads: int, num_kv_heads: int, head_dim: int, eps: float,
) -> Tensor:
    return qkv.new_empty((qkv.shape[0], num_q_heads * head_dim))


@register_op(mutates=("k_cache", "v_cache"), fake=_qkv_rope_cache_fake)
def qkv_rope_cache(
    qkv: Tensor,
    positions: Tensor,
    cos_sin_cache: Tensor,
    q_norm_weight: Optional[Tensor],
    k_norm_weight: Optional[Tensor],
    k_cache: Tensor,
    v_cache: Tensor,
    slot_mapping: Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    head_dim: int,
    eps: float,
) -> Tensor:
    # split(qkv) -> [q/k norm] -> rotary -> write k, v to the paged cache; returns rotated q
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    q, k, v = torch.split(qkv, [q_size, kv_size, kv_size], dim=-1)
    if q_norm_weight is not None:
        q = head_rms_norm.native(q, q_norm_weight, eps, head_dim)
    if k_norm_weight is not None:
        k = head_rms_norm.native(k, k_norm_weight, eps, head_dim)
    q = _rotate(q, positions, cos_sin_cache, head_dim)
    k = _rotate(k, positions, cos_sin_cache, head_dim)
    kv_cache_write.native(k, v, k_cache, v_cache, slot_mapping)
    return q
