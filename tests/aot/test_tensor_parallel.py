"""Tensor-parallel sharding rules: per weight kind, and the sharded layers compute what the whole ones do."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from llmc.aot.spec import ModelSpec
from llmc.aot.ir.ops.fp8 import dequantize_fp8, quantize_fp8
from llmc.aot.tensor_parallel import check_divisible, check_fp8_groups, rank_spec, rule_for, shard
from llmc.errors import LlmcError, UserError

H, HD, I, V = 48, 8, 40, 96


def spec(q_heads=8, kv_heads=2, moe=False) -> ModelSpec:
    return ModelSpec(architecture="LlamaForCausalLM", hidden_size=H, num_layers=1, num_q_heads=q_heads,
                     num_kv_heads=kv_heads, head_dim=HD, intermediate_size=I, vocab_size=V, rms_norm_eps=1e-6,
                     max_position_embeddings=64, tie_word_embeddings=False, rope_theta=1e4, sliding_windows=(0,),
                     moe_layers=(True,) if moe else (), num_experts=3 if moe else 0,
                     num_experts_per_tok=2 if moe else 0, moe_intermediate_size=I if moe else 0)


def shards(name, tensor, s, size):
    return [shard(name, tensor, s, r, size) for r in range(size)]


@pytest.mark.parametrize("name, kind, dim", [
    ("layers.0.q_proj.weight", "column", 0), ("layers.3.k_proj.bias", "column", 0), ("layers.0.qkv_proj.weight", "column", 0),
    ("layers.0.gate_up_proj.weight", "column", 0), ("layers.1.experts.gate_up_proj", "column", 1),
    ("layers.0.o_proj.weight", "row", 1), ("layers.0.down_proj.weight", "row", 1), ("layers.0.experts.down_proj", "row", 2),
    ("layers.0.o_proj.bias", "row_bias", 0), ("embed_tokens.weight", "vocab", 0), ("lm_head.weight", "vocab", 0),
    ("layers.0.input_layernorm.weight", "replicate", 0), ("layers.0.q_norm.weight", "replicate", 0),
    ("norm.weight", "replicate", 0), ("layers.0.router.weight", "replicate", 0), ("rope.cos_sin", "replicate", 0),
    ("layers.0.pre_feedforward_layernorm.weight", "replicate", 0), ("layers.0.qkv_proj.weight_scale", "column", 0),
    ("layers.0.k_proj.weight_scale", "column", 0), ("layers.0.gate_up_proj.weight_scale", "column", 0),
    ("layers.0.o_proj.weight_scale", "row_scale", 1), ("layers.0.down_proj.weight_scale", "row_scale", 1),
])
def test_each_weight_kind_has_its_rule(name, kind, dim):
    rule = rule_for(name)
    assert (rule.kind, rule.dim) == (kind, dim)


def test_a_weight_without_a_rule_is_an_error():
    with pytest.raises(LlmcError, match="layers.0.mystery"):
        rule_for("layers.0.mystery.weight")


@pytest.mark.parametrize("q_heads, kv_heads, size, kv_rows", [
    (8, 2, 2, HD), (8, 2, 4, HD), (8, 1, 4, HD), (8, 8, 4, 2 * HD), (8, 4, 8, HD),
])
def test_kv_heads_split_or_replicate(q_heads, kv_heads, size, kv_rows):
    s = spec(q_heads, kv_heads)
    k = torch.arange(s.kv_size * H, dtype=torch.float32).reshape(s.kv_size, H)
    parts = shards("layers.0.k_proj.weight", k, s, size)
    assert all(p.shape == (kv_rows, H) for p in parts)
    for r, p in enumerate(parts):  # rank r's query heads attend to the KV heads it holds
        first_q_head = r * q_heads // size
        kv_head = first_q_head // (q_heads // kv_heads)
        assert torch.equal(p[:HD], k[kv_head * HD:(kv_head + 1) * HD])
    assert rank_spec(s, size).num_kv_heads == kv_rows // HD


def attention(x, wq, wk, wv, wo, q_heads, kv_heads):
    t = x.shape[0]
    q = (x @ wq.T).view(t, q_heads, HD).transpose(0, 1)
    k = (x @ wk.T).view(t, kv_heads, HD).transpose(0, 1).repeat_interleave(q_heads // kv_heads, 0)
    v = (x @ wv.T).view(t, kv_heads, HD).transpose(0, 1).repeat_interleave(q_heads // kv_heads, 0)
    mask = torch.full((t, t), float("-inf")).triu(1)
    a = torch.softmax(q @ k.transpose(1, 2) / HD ** 0.5 + mask, -1) @ v
    return a.transpose(0, 1).reshape(t, -1) @ wo.T


@pytest.mark.parametrize("q_heads, kv_heads, size, fused", [(8, 2, 2, False), (8, 2, 4, True), (8, 1, 4, False), (8, 2, 8, True)])
def test_sharded_attention_sums_to_the_whole(q_heads, kv_heads, size, fused):
    torch.manual_seed(0)
    s = spec(q_heads, kv_heads)
    x = torch.randn(5, H, dtype=torch.float64)
    wq, wk, wv = (torch.randn(n, H, dtype=torch.float64) for n in (s.q_size, s.kv_size, s.kv_size))
    wo = torch.randn(H, s.q_size, dtype=torch.float64)
    r_spec = rank_spec(s, size)
    total = 0
    for r in range(size):
        if fused:
            qkv = shard("layers.0.qkv_proj.weight", torch.cat([wq, wk, wv]), s, r, size)
            q_r, k_r, v_r = qkv.split([r_spec.q_size, r_spec.kv_size, r_spec.kv_size])
        else:
            q_r, k_r, v_r = (shard(f"layers.0.{n}_proj.weight", w, s, r, size) for n, w in zip("qkv", (wq, wk, wv)))
        o_r = shard("layers.0.o_proj.weight", wo, s, r, size)
        total = total + attention(x, q_r, k_r, v_r, o_r, r_spec.num_q_heads, r_spec.num_kv_heads)
    torch.testing.assert_close(total, attention(x, wq, wk, wv, wo, q_heads, kv_heads))


def mlp(x, gate, up, down):
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T


@pytest.mark.parametrize("size", [2, 4])
def test_sharded_mlp_sums_to_the_whole_dense_fused_and_experts(size):
    torch.manual_seed(1)
    s = spec()
    x = torch.randn(3, H, dtype=torch.float64)
    gate, up, down = torch.randn(I, H, dtype=torch.float64), torch.randn(I, H, dtype=torch.float64), torch.randn(H, I, dtype=torch.float64)
    bias = torch.randn(H, dtype=torch.float64)
    whole = mlp(x, gate, up, down) + bias
    dense = sum(mlp(x, shard("layers.0.gate_proj.weight", gate, s, r, size), shard("layers.0.up_proj.weight", up, s, r, size),
                    shard("layers.0.down_proj.weight", down, s, r, size)) + shard("layers.0.down_proj.bias", bias, s, r, size)
                for r in range(size))
    torch.testing.assert_close(dense, whole)
    fused = 0
    for r in range(size):
        g, u = shard("layers.0.gate_up_proj.weight", torch.cat([gate, up]), s, r, size).chunk(2)
        fused = fused + mlp(x, g, u, shard("layers.0.down_proj.weight", down, s, r, size))
    torch.testing.assert_close(fused + bias, whole)
    moe = spec(moe=True)
    experts_gate_up = torch.stack([torch.cat([gate, up]), torch.cat([up, gate]), torch.cat([gate, gate])])
    experts_down = torch.stack([down, down * 2, -down])
    for e in range(3):
        expected = mlp(x, *experts_gate_up[e].chunk(2), experts_down[e])
        got = sum(mlp(x, *shard("layers.0.experts.gate_up_proj", experts_gate_up, moe, r, size)[e].chunk(2),
                      shard("layers.0.experts.down_proj", experts_down, moe, r, size)[e]) for r in range(size))
        torch.testing.assert_close(got, expected)


def test_vocab_parallel_embedding_and_head():
    s = spec()
    head = torch.randn(V, H)
    x = torch.randn(2, H)
    parts = shards("lm_head.weight", head, s, 4)
    torch.testing.assert_close(torch.cat([x @ p.T for p in parts], -1), x @ head.T)
    assert rank_spec(s, 4).vocab_size == V


@pytest.mark.parametrize("change, size, field", [
    (dict(num_q_heads=6, num_kv_heads=2), 4, "num_attention_heads"),
    (dict(vocab_size=97), 2, "vocab_size"),
    (dict(intermediate_size=42), 4, "intermediate_size"),
    (dict(num_q_heads=12, num_kv_heads=3), 4, "num_key_value_heads"),
])
def test_what_does_not_divide_is_named(change, size, field):
    s = dataclasses.replace(spec(), **change)
    with pytest.raises(UserError, match=field):
        check_divisible(s, size)


def test_moe_intermediate_must_divide():
    s = dataclasses.replace(spec(moe=True), moe_intermediate_size=42)
    with pytest.raises(UserError, match="moe_intermediate_size"):
        check_divisible(s, 4)
    check_divisible(spec(moe=True), 4)


@pytest.mark.parametrize("group", [0, 2])
@pytest.mark.parametrize("name, rows, cols", [("qkv_proj", 8 * HD + 2 * 2 * HD, H), ("gate_up_proj", 2 * I, H),
                                              ("o_proj", H, 8 * HD), ("down_proj", H, I)])
@pytest.mark.parametrize("size", [2, 4])
def test_fp8_scales_follow_their_weights(name, rows, cols, group, size):
    # dequantize(shard(W8), shard(s)) == shard(dequantize(W8, s)): each rank's scales are its weight's
    s = spec()
    w8, scale = quantize_fp8(torch.randn(rows, cols), group)
    if not group:
        scale = scale.reshape(rows, 1)
    whole = dequantize_fp8(w8, scale, group)
    for rank in range(size):
        w = f"layers.0.{name}.weight"
        part = dequantize_fp8(shard(w, w8, s, rank, size), shard(f"layers.0.{name}.weight_scale", scale, s, rank, size), group)
        assert torch.equal(part, shard(w, whole, s, rank, size)), f"{name} group {group} rank {rank}"


@pytest.mark.parametrize("change, group, field", [
    (dict(intermediate_size=40), 8, "intermediate_size 40"),  # 10 columns a rank
    (dict(num_q_heads=4, num_kv_heads=2), 32, "num_attention_heads 4"),  # 16 columns a rank
])
def test_fp8_blocks_must_split_into_whole_groups(change, group, field):
    with pytest.raises(UserError, match=f"{field} split over --tensor-parallel-size 4 .*weight_block_size {group}"):
        check_fp8_groups(dataclasses.replace(spec(), **change), 4, group)
    check_fp8_groups(spec(), 2, 4)
    check_fp8_groups(dataclasses.replace(spec(moe=True), intermediate_size=40), 4, 16)  # no dense down_proj
    check_fp8_groups(spec(), 4, 0)  # per-channel scales are whole on every rank
