"""Decode attention with a workspace for split-KV kernels (flash-decoding)."""

import torch
from torch import Tensor

from ..op import register_op
from .attention import _attend


def _split_attention_fake(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int, max_splits: int,
) -> tuple[Tensor, Tensor]:
    head_dim = k_cache.shape[3]
    workspace = q.new_empty((q.shape[0], q.shape[1] // head_dim, max_splits, head_dim + 2), dtype=torch.float32)
    return torch.empty_like(q), workspace


@register_op(fake=_split_attention_fake)
def split_kv_paged_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int, max_splits: int,
) -> tuple[Tensor, Tensor]:
    """paged_attention (first output), plus a float32 workspace [T, Hq, max_splits, head_dim + 2]
    where kernels that split the KV length keep each split's partial result: its normalised
    output, running max and sum. The workspace's contents are not part of the result."""
    out = _attend(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, 0.0)
    return out, _split_attention_fake(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len,
                                      scale, sliding_window, max_splits)[1].zero_()
