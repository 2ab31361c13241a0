"""Causal attention over the paged KV cache, for prefill and decode alike."""

import torch
from torch import Tensor

from ..op import register_op


def _paged_attention_fake(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int,
) -> Tensor:
    return torch.empty_like(q)


def _attend(
    q: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    block_tables: Tensor,
    seq_lens: Tensor,
    query_start_loc: Tensor,
    max_query_len: int,
    scale: float,
    sliding_window: int,
    soft_cap: float,
) -> Tensor:
    """q [T, Hq*hd] holds the new tokens of B sequences back to back: sequence b owns rows
    query_start_loc[b]:query_start_loc[b+1] and has seq_lens[b] tokens in the cache, the new
    ones last. Query i of a sequence with n new tokens sits at position seq_lens[b] - n + i and
    sees keys at positions p <= its own (and p > its own - sliding_window when that is > 0).
    max_query_len bounds n (1 for decode). Rows of no sequence come back as zeros. A soft_cap > 0
    maps scores s (scaled) to soft_cap * tanh(s / soft_cap) before the softmax.
    """
    block_size, kv_heads, head_dim = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    q_heads = q.shape[1] // head_dim
    out = torch.zeros_like(q)
    starts = query_start_loc.tolist()
    for b, length in enumerate(seq_lens.tolist()):
        first, last = starts[b], starts[b + 1]
        n = last - first
        if n <= 0 or length <= 0:
            continue
        blocks = block_tables[b, : (length + block_size - 1) // block_size].long()
        keys = k_cache[blocks].reshape(-1, kv_heads, head_dim)[:length].float()
        values = v_cache[blocks].reshape(-1, kv_heads, head_dim)[:length].float()
        keys = keys.repeat_interleave(q_heads // kv_heads, dim=1)
        values = values.repeat_interleave(q_heads // kv_heads, dim=1)
        query = q[first:last].reshape(n, q_heads, head_dim).float()
        scores = torch.einsum("qhd,khd->hqk", query, keys) * scale
        q_pos = torch.arange(length - n, length)[:, None]
        k_pos = torch.arange(length)[None, :]
        visible = k_pos <= q_pos
        if sliding_window > 0:
            visible &= k_pos > q_pos - sliding_window
        if soft_cap > 0:
            scores = torch.tanh(scores / soft_cap) * soft_cap
        scores = scores.masked_fill(~visible, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[first:last] = torch.einsum("hqk,khd->qhd", probs, values).reshape(n, -1).to(q.dtype)
    return out


@register_op(fake=_paged_attention_fake)
def paged_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int,
) -> Tensor:
    return _attend(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, 0.0)


def _softcap_attention_fake(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int, soft_cap: float,
) -> Tensor:
    return torch.empty_like(q)


@register_op(fake=_softcap_attention_fake)
def softcap_paged_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, seq_lens: Tensor,
    query_start_loc: Tensor, max_query_len: int, scale: float, sliding_window: int, soft_cap: float,
) -> Tensor:
    # paged_attention with scores soft-capped (Gemma 2)
    return _attend(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap)
