"""kv_cache_write: every provider against the native scatter into the paged cache."""

import pytest
import torch

from harness import providers, run
from tolerances import assert_close

from llmc.aot.ir import OPS


@pytest.mark.parametrize("provider", providers("kv_cache_write"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens", [1, 3, 7])
@pytest.mark.parametrize("kv_heads, head_dim, block_size", [(2, 32, 4), (4, 64, 16), (1, 16, 1), (3, 80, 5)])
def test_kv_cache_write(provider, dtype, tokens, kv_heads, head_dim, block_size):
    g = torch.Generator().manual_seed(tokens * head_dim + kv_heads)
    blocks = (tokens + block_size) // block_size + 1  # a few slots more than tokens
    k = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    v = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    slots = torch.randperm(blocks * block_size, generator=g)[:tokens].to(torch.int32)
    if tokens > 1:
        slots[-1] = -1  # a padding token writes nothing
    poison = torch.full((blocks, block_size, kv_heads, head_dim), float("nan"), dtype=dtype)
    k_cache, v_cache, want_k, want_v = poison.clone(), poison.clone(), poison.clone(), poison.clone()
    assert run("kv_cache_write", provider, k, v, k_cache, v_cache, slots) is None
    OPS["kv_cache_write"].native(k, v, want_k, want_v, slots)
    assert_close(k_cache, want_k, dtype, f"kv_cache_write {provider} k_cache")
    assert_close(v_cache, want_v, dtype, f"kv_cache_write {provider} v_cache")
