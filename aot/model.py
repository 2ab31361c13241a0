"""The decoder forward step, written with IR ops only, and traced into a torch.fx graph.

One step serves prefill and decode alike: `num_tokens` new tokens of up to `num_seqs`
sequences, whose keys and values go to the paged cache before attention reads it. The graph is
the unfused model; passes fuse it.
"""

from __future__ import annotations

import re

import torch
import torch.fx

from .spec import ModelSpec

ops = torch.ops.llmc

# name -> dtype of the per-step inputs the runtime fills (see docs/FORMAT.md)
STEP_INPUTS = {
    "input_ids": torch.int32,
    "positions": torch.int32,
    "slot_mapping": torch.int32,
    "block_tables": torch.int32,
    "seq_lens": torch.int32,
    "query_start_loc": torch.int32,
    "logits_indices": torch.int32,
    "temperature": torch.float32,
    "top_k": torch.int32,
    "top_p": torch.float32,
    "uniform": torch.float32,
}
ROPE_TABLE = "rope.cos_sin"


class _Builder:
    """Placeholders named after what they hold, and call nodes named after the module they model."""

    def __init__(self):
        self.graph = torch.fx.Graph()
        self.tracer = torch.fx.proxy.GraphAppendingTracer(self.graph)

    def placeholder(self, name: str) -> torch.fx.Proxy:
        node = self.graph.placeholder(re.sub(r"\W", "_", name))
        node.meta["ref"] = name
        return torch.fx.Proxy(node, self.tracer)

    def name(self, proxy: torch.fx.Proxy, name: str) -> torch.fx.Proxy:
        proxy.node._rename(name)
        return proxy


def trace(spec: ModelSpec, params: dict[str, torch.Tensor]) -> torch.fx.GraphModule:
    b = _Builder()
    inp = {name: b.placeholder(f"input:{name}") for name in STEP_INPUTS}
    w = {name: b.placeholder(f"weight:{name}") for name in sorted(params)}
    kv = [(b.placeholder(f"kv:k:{i}"), b.placeholder(f"kv:v:{i}")) for i in range(spec.num_layers)]
    max_query_len = b.placeholder("const:max_query_len")

    def opt(name):
        return w.get(name)

    h = b.name(ops.embedding(inp["input_ids"], w["embed_tokens.weight"]), "embed_tokens")
    residual = None
    scale = spec.head_dim ** -0.5
    for i in range(spec.num_layers):
        p = f"layers.{i}."
        if residual is not None:
            h = b.name(ops.add(h, residual), f"layers_{i}_residual")
        residual = h
        x = b.name(ops.rms_norm(h, w[p + "input_layernorm.weight"], spec.rms_norm_eps), f"layers_{i}_input_layernorm")
        q = b.name(ops.linear(x, w[p + "q_proj.weight"], opt(p + "q_proj.bias")), f"layers_{i}_q_proj")
        k = b.name(ops.linear(x, w[p + "k_proj.weight"], opt(p + "k_proj.bias")), f"layers_{i}_k_proj")
        v = b.name(ops.linear(x, w[p + "v_proj.weight"], opt(p + "v_proj.bias")), f"layers_{i}_v_proj")
        if spec.qk_norm:
            q = b.name(ops.head_rms_norm(q, w[p + "q_norm.weight"], spec.rms_norm_eps, spec.head_dim), f"layers_{i}_q_norm")
            k = b.name(ops.head_rms_norm(k, w[p + "k_norm.weight"], spec.rms_norm_eps, spec.head_dim), f"layers_{i}_k_norm")
        rotated = b.name(ops.rotary_embedding(q, k, inp["positions"], w[ROPE_TABLE], spec.head_dim), f"layers_{i}_rotary")
        q, k = rotated[0], rotated[1]
        k_cache, v_cache = kv[i]
        b.name(ops.kv_cache_write(k, v, k_cache, v_cache, inp["slot_mapping"]), f"layers_{i}_kv_write")
        a = b.name(
            ops.paged_attention(
                q, k_cache, v_cache, inp["block_tables"], inp["seq_lens"], inp["query_start_loc"],
                max_query_len, scale, spec.sliding_windows[i],
            ),
            f"layers_{i}_attn",
        )
        o = b.name(ops.linear(a, w[p + "o_proj.weight"], opt(p + "o_proj.bias")), f"layers_{i}_o_proj")
        h = b.name(ops.add(o, residual), f"layers_{i}_attn_residual")
        residual = h
        x = b.name(ops.rms_norm(h, w[p + "post_attention_layernorm.weight"], spec.rms_norm_eps), f"layers_{i}_post_attention_layernorm")
        gate = b.name(ops.linear(x, w[p + "gate_proj.weight"], opt(p + "gate_proj.bias")), f"layers_{i}_gate_proj")
        up = b.name(ops.linear(x, w[p + "up_proj.weight"], opt(p + "up_proj.bias")), f"layers_{i}_up_proj")
        m = b.name(ops.silu_and_mul(ops.concat([gate, up])), f"layers_{i}_act")
        h = b.name(ops.linear(m, w[p + "down_proj.weight"], opt(p + "down_proj.bias")), f"layers_{i}_down_proj")
    h = b.name(ops.add(h, residual), "final_residual")
    x = b.name(ops.rms_norm(h, w["norm.weight"], spec.rms_norm_eps), "norm")
    head = w["embed_tokens.weight"] if spec.tie_word_embeddings or "lm_head.weight" not in w else w["lm_head.weight"]
    logits = b.name(ops.lm_head(x, head, inp["logits_indices"]), "lm_head")
    tokens = b.name(ops.sample(logits, inp["temperature"], inp["top_k"], inp["top_p"], inp["uniform"]), "sample")
    b.graph.output({"logits": logits.node, "next_tokens": tokens.node})
    return torch.fx.GraphModule(torch.nn.Module(), b.graph)
