"""rotary_embedding and the fused qkv_rope_cache: every kernel impl against the native function."""

import torch
from harness import parametrize, run
from tolerances import assert_close

from llmc.aot.ir import OPS

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
HEADS = [(6, 2, 32), (4, 4, 64), (8, 1, 16), (5, 1, 80)]  # (q heads, kv heads, head_dim)
MAX_POSITIONS = 50


def _cos_sin(head_dim):
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    angles = torch.arange(MAX_POSITIONS).float()[:, None] * inv_freq[None, :]
    return torch.cat((angles.cos(), angles.sin()), dim=-1)  # [P, hd] float32


def _rope_args(dtype, tokens, heads):
    q_heads, kv_heads, head_dim = heads
    g = torch.Generator().manual_seed(tokens * 100 + head_dim)
    q = torch.randn(tokens, q_heads * head_dim, generator=g).to(dtype)
    k = torch.randn(tokens, kv_heads * head_dim, generator=g).to(dtype)
    positions = torch.randint(0, MAX_POSITIONS, (tokens,), generator=g, dtype=torch.int32)
    return q, k, positions, _cos_sin(head_dim), head_dim


def _fused_args(dtype, tokens, heads, norm):
    q_heads, kv_heads, head_dim = heads
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
    return (qkv, positions, _cos_sin(head_dim), q_norm, k_norm, poison.clone(), poison.clone(), slots,
            q_heads, kv_heads, head_dim, 1e-6)


def _q_norm_only_args():
    # only q has a norm weight (k passes through un-normalised)
    g = torch.Generator().manual_seed(3)
    tokens, q_heads, kv_heads, head_dim = 3, 6, 2, 32
    qkv = torch.randn(tokens, (q_heads + 2 * kv_heads) * head_dim, generator=g)
    positions = torch.tensor([0, 17, 49], dtype=torch.int32)
    slots = torch.tensor([5, 0, 11], dtype=torch.int32)
    q_norm = 1 + 0.3 * torch.randn(head_dim, generator=g)
    k_cache = torch.full((3, 4, kv_heads, head_dim), float("nan"))
    return (qkv, positions, _cos_sin(head_dim), q_norm, None, k_cache, k_cache.clone(), slots, q_heads, kv_heads,
            head_dim, 1e-6)


@parametrize("rotary_embedding", _rope_args, dtype=DTYPES, tokens=[1, 3, 7], heads=HEADS)
def test_rotary_embedding(provider, dtype, tokens, heads):
    args = _rope_args(dtype, tokens, heads)
    q_out, k_out = run("rotary_embedding", provider, *args)
    want_q, want_k = OPS["rotary_embedding"].native(*args)
    assert_close(q_out, want_q, dtype, f"rotary_embedding {provider} q")
    assert_close(k_out, want_k, dtype, f"rotary_embedding {provider} k")


def _assert_fused_matches(provider, make, dtype, what):
    """q and both caches (written in place from the same poisoned start) match native's."""
    args, want_args = make(), make()
    got = (run("qkv_rope_cache", provider, *args), args[5], args[6])
    want = (OPS["qkv_rope_cache"].native(*want_args), want_args[5], want_args[6])
    for name, g, w in zip(("q", "k_cache", "v_cache"), got, want):
        assert_close(g, w, dtype, f"{what} {name}")


@parametrize("qkv_rope_cache", _fused_args, dtype=DTYPES, tokens=[1, 3, 7], heads=HEADS, norm=["qk_norm", "none"])
def test_qkv_rope_cache(provider, dtype, tokens, heads, norm):
    make = lambda: _fused_args(dtype, tokens, heads, norm)  # noqa: E731
    _assert_fused_matches(provider, make, dtype, f"qkv_rope_cache {provider} {norm} T={tokens} {heads}")


@parametrize("qkv_rope_cache", _q_norm_only_args)
def test_qkv_rope_cache_one_norm(provider):
    _assert_fused_matches(provider, _q_norm_only_args, torch.float32, f"qkv_rope_cache {provider} q-norm only")
