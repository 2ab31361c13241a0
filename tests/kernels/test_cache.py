"""kv_cache_write: every kernel impl against the native scatter into the paged cache."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS


def _args(dtype, tokens, layout):
    kv_heads, head_dim, block_size = layout
    g = torch.Generator().manual_seed(tokens * head_dim + kv_heads)
    blocks = (tokens + block_size) // block_size + 1  # a few slots more than tokens
    k = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    v = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    slots = torch.randperm(blocks * block_size, generator=g)[:tokens].to(torch.int32)
    if tokens > 1:
        slots[-1] = -1  # a padding token writes nothing
    poison = torch.full((blocks, block_size, kv_heads, head_dim), float("nan"), dtype=dtype)
    return k, v, poison.clone(), poison.clone(), slots


@parametrize("kv_cache_write", _args, dtype=[torch.float32, torch.bfloat16, torch.float16], tokens=[1, 3, 7],
             layout=[(2, 32, 4), (4, 64, 16), (1, 16, 1), (3, 80, 5)])  # (kv heads, head_dim, block size)
def test_kv_cache_write(provider, dtype, tokens, layout):
    k, v, k_cache, v_cache, slots = _args(dtype, tokens, layout)
    want_k, want_v = k_cache.clone(), v_cache.clone()
    assert run("kv_cache_write", provider, k, v, k_cache, v_cache, slots) is None
    OPS["kv_cache_write"].native(k, v, want_k, want_v, slots)
    assert_close(k_cache, want_k, dtype, f"kv_cache_write {provider} k_cache")
    assert_close(v_cache, want_v, dtype, f"kv_cache_write {provider} v_cache")
