"""One decoder layer as IR ops, shaped by the ModelSpec: attention, then a gated MLP or experts.

Every family is this one layer with its description's choices (sandwich norms, q/k norm, fused
q/k/v or gate/up weights, soft-cap, rope table per layer type, experts); see `aot/families/`.
"""

from __future__ import annotations

import torch

from .spec import ModelSpec

ops = torch.ops.llmc
ROPE_TABLE = "rope.cos_sin"
LOCAL_ROPE_TABLE = "rope.local.cos_sin"  # sliding layers of a family with a rope base per layer type
ACTIVATIONS = {"silu": "silu_and_mul", "gelu_tanh": "gelu_tanh_and_mul"}  # spec.activation -> gated op


class Layer:
    def __init__(self, spec: ModelSpec, b, w: dict, inp: dict, max_query_len, tensor_parallel_size: int = 1):
        self.spec, self.b, self.w, self.inp, self.max_query_len = spec, b, w, inp, max_query_len
        self.tensor_parallel_size = tensor_parallel_size

    def reduced(self, x, name: str):
        """A row-parallel layer's output: each rank holds a partial sum, all_reduce makes the whole."""
        return x if self.tensor_parallel_size == 1 else self.b.name(ops.all_reduce(x), f"{name}_all_reduce")

    def linear(self, x, p: str, name: str, i: int):
        return self.b.name(ops.linear(x, self.w[f"{p}{name}.weight"], self.w.get(f"{p}{name}.bias")), f"layers_{i}_{name}")

    def norm(self, x, p: str, name: str, i: int):
        return self.b.name(ops.rms_norm(x, self.w[f"{p}{name}.weight"], self.spec.rms_norm_eps), f"layers_{i}_{name}")

    def __call__(self, i: int, h, kv) -> tuple:
        """(MLP output, residual stream) of layer i, given the stream h it starts from."""
        spec, b, p = self.spec, self.b, f"layers.{i}."
        residual = h
        x = self.norm(h, p, "input_layernorm", i)
        o = self.attention(i, p, x, kv)
        if spec.sandwich_norms:
            o = self.norm(o, p, "post_attention_layernorm", i)
        h = b.name(ops.add(o, residual), f"layers_{i}_attn_residual")
        residual = h
        x = self.norm(h, p, "pre_feedforward_layernorm" if spec.sandwich_norms else "post_attention_layernorm", i)
        h = self.experts(i, p, x) if spec.is_moe(i) else self.mlp(i, p, x)
        if spec.sandwich_norms:
            h = self.norm(h, p, "post_feedforward_layernorm", i)
        return h, residual

    def attention(self, i: int, p: str, x, kv):
        spec, b, w, inp = self.spec, self.b, self.w, self.inp
        if p + "qkv_proj.weight" in w:
            qkv = self.linear(x, p, "qkv_proj", i)
            parts = ops.split(qkv, [spec.q_size, spec.kv_size, spec.kv_size])
            q, k, v = parts[0], parts[1], parts[2]
        else:
            q, k, v = (self.linear(x, p, name, i) for name in ("q_proj", "k_proj", "v_proj"))
        if spec.qk_norm:
            q = b.name(ops.head_rms_norm(q, w[p + "q_norm.weight"], spec.rms_norm_eps, spec.head_dim), f"layers_{i}_q_norm")
            k = b.name(ops.head_rms_norm(k, w[p + "k_norm.weight"], spec.rms_norm_eps, spec.head_dim), f"layers_{i}_k_norm")
        window = spec.sliding_windows[i]
        table = w[LOCAL_ROPE_TABLE if spec.local_rope and window else ROPE_TABLE]
        rotated = b.name(ops.rotary_embedding(q, k, inp["positions"], table, spec.head_dim), f"layers_{i}_rotary")
        q, k = rotated[0], rotated[1]
        k_cache, v_cache = kv
        b.name(ops.kv_cache_write(k, v, k_cache, v_cache, inp["slot_mapping"]), f"layers_{i}_kv_write")
        scale = spec.attention_scale or spec.head_dim ** -0.5
        args = (q, k_cache, v_cache, inp["block_tables"], inp["seq_lens"], inp["query_start_loc"], self.max_query_len,
                scale, window)
        if spec.attn_soft_cap:
            a = b.name(ops.softcap_paged_attention(*args, spec.attn_soft_cap), f"layers_{i}_attn")
        else:
            a = b.name(ops.paged_attention(*args), f"layers_{i}_attn")
        return self.reduced(self.linear(a, p, "o_proj", i), f"layers_{i}_o_proj")

    def mlp(self, i: int, p: str, x):
        act = getattr(ops, ACTIVATIONS[self.spec.activation])
        if p + "gate_up_proj.weight" in self.w:
            m = self.b.name(act(self.linear(x, p, "gate_up_proj", i)), f"layers_{i}_act")
        else:
            gate, up = self.linear(x, p, "gate_proj", i), self.linear(x, p, "up_proj", i)
            m = self.b.name(act(ops.concat([gate, up])), f"layers_{i}_act")
        return self.reduced(self.linear(m, p, "down_proj", i), f"layers_{i}_down_proj")

    def experts(self, i: int, p: str, x):
        spec, b, w = self.spec, self.b, self.w
        logits = b.name(ops.linear(x, w[p + "router.weight"], None), f"layers_{i}_router")
        routed = b.name(ops.moe_route(logits, spec.num_experts_per_tok, spec.norm_topk_prob), f"layers_{i}_route")
        experts = b.name(ops.fused_moe(x, w[p + "experts.gate_up_proj"], w[p + "experts.down_proj"], routed[0], routed[1]),
                         f"layers_{i}_experts")
        return self.reduced(experts, f"layers_{i}_experts")
