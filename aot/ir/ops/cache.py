"""Writing new keys and values into the paged KV cache."""

from torch import Tensor

from ..op import register_op


@register_op(mutates=("k_cache", "v_cache"))
def kv_cache_write(k: Tensor, v: Tensor, k_cache: Tensor, v_cache: Tensor, slot_mapping: Tensor) -> None:
    # k, v [T, Hk*hd] -> caches [blocks, block_size, Hk, hd] at flat slot slot_mapping[t]; slot < 0 skips
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    heads, head_dim = k_cache.shape[2], k_cache.shape[3]
    k_cache.view(-1, heads, head_dim)[slots] = k[keep].reshape(-1, heads, head_dim).to(k_cache.dtype)
    v_cache.view(-1, heads, head_dim)[slots] = v[keep].reshape(-1, heads, head_dim).to(v_cache.dtype)
