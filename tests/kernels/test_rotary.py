"""rotary_embedding and the fused qkv_rope_cache: every provider against the native function."""

import pytest
import torch

from harness import providers, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HEADS = [(6, 2, 32), (4, 4, 64), (8, 1, 16), (5, 1, 80)]  # (q heads, kv heads, head_dim)
MAX_POSITIONS = 50


def _cos_sin(head_dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.arange(MAX_POSITIONS).float()[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # [P, hd] float32


@pytest.mark.parametrize("provider", providers("rotary_embedding"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 7])
@pytest.mark.parametrize("q_heads, kv_heads, head_dim", HEADS)
def test_rotary_embedding(provider, dtype, tokens, q_heads, kv_heads, head_dim):
    g = torch.Generator().manual_seed(tokens * 100 + head_dim)
    q = torch.randn(tokens, q_heads * head_dim, generator=g).to(dtype)
    k = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    positions = torch.randint(0, MAX_POSITIONS, (tokens,), generator=g, dtype=torch.int32)
    cos_sin = _cos_sin(head_dim)
    q_out, k_out = run("rotary_embedding", provider, q, k, positions, cos_sin, head_dim)
    want_q, want_k = OPS["rotary_embedding"].native(q, k, positions, cos_sin, head_dim)
    assert_close(q_out, want_q, dtype, f"rotary_embedding {provider} q")
    assert_close(k_out, want_k, dtype, f"rotary_embedding {provider} k")


@pytest.mark.parametrize("provider", providers("qkv_rope_cache"))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tokens", [1, 3, 7])
@pytest.mark.parametrize("q_heads, kv_heads, head_dim", HEADS)
@pytest.mark.parametrize("norm", ["qk_norm", "none"])
def test_qkv_rope_cache(provider, dtype, tokens, q_heads, kv_heads, head_dim, norm):
    g = torch.Generator().manual_seed(tokens * 1000 + q_heads * 10 + head_dim)
    qkv = (torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim, generator=g) * 2).to(dtype)
    positions = torch.randint(0, MAX_POSITIONS, (tokens,), generator=g, dtype=torch.int32)
    q_norm = k_norm = None
    if norm == "qk_norm":
        q_norm = (1 + 0.3 * torch.randn(head_dim, generator=g)).to(dtype)
        k_norm = (1 + 0.3 * torch.randn(head_dim, generator=g)).to(dtype)
    blocks, block_size = 3, 4
    slots = torch.randperm(blocks * block_size, generator=g)[:tokens].to(torch.int32)
    slots[tokens // 2] = -1  # a padding token writes nothing
    poison = torch.full((blocks, block_size, kv_heads, head_dim), float("nan"), dtype=dtype)
    caches = {}
    for who, fn in (("kernel", lambda *a: run("qkv_rope_cache", provider, *a)),
                    ("native", OPS["qkv_rope_cache"].native)):
        k_cache, v_cache = poison.clone(), poison.clone()
        q = fn(qkv, positions, _cos_sin(head_dim), q_norm, k_norm, k_cache, v_cache, slots,
               q_heads, kv_heads, head_dim, 1e-6)
        caches[who] = (q, k_cache, v_cache)
    what = f"qkv_rope_cache {provider} {norm} T={tokens} ({q_heads},{kv_heads},{head_dim})"
    for name, got, want in zip(("q", "k_cache", "v_cache"), caches["kernel"], caches["native"]):
        assert_close(got, want, dtype, f"{what} {name}")


@pytest.mark.parametrize("provider", providers("qkv_rope_cache"))
def test_qkv_rope_cache_one_norm(provider):
    # only q has a norm weight (k passes through un-normalised)
    g = torch.Generator().manual_seed(3)
    tokens, q_heads, kv_heads, head_dim = 3, 6, 2, 32
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim, generator=g)
    positions = torch.tensor([0, 17, 49], dtype=torch.int32)
    slots = torch.tensor([5, 0, 11], dtype=torch.int32)
    q_norm = 1 + 0.3 * torch.randn(head_dim, generator=g)
    results = []
    for fn in (lambda *a: run("qkv_rope_cache", provider, *a), OPS["qkv_rope_cache"].native):
        k_cache = torch.full((3, 4, kv_heads, head_dim), float("nan"))
        v_cache = k_cache.clone()
        q = fn(qkv, positions, _cos_sin(head_dim), q_norm, None, k_cache, v_cache, slots, q_heads, kv_heads,
               head_dim, 1e-6)
        results.append((q, k_cache, v_cache))
    for name, got, want in zip(("q", "k_cache", "v_cache"), *results):
        assert_close(got, want, torch.float32, f"qkv_rope_cache {provider} q-norm only {name}")
