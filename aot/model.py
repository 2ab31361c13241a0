"""The decoder forward step, written with IR ops only, and traced into a torch.fx graph.

One step serves prefill and decode alike: `num_tokens` new tokens of up to `num_seqs`
sequences, whose keys and values go to the paged cache before attention reads it. The graph is
the unfused model; passes fuse it.
"""

from __future__ import annotations

import re

import torch
import torch.fx

from .layer import LOCAL_ROPE_TABLE, ROPE_TABLE, Layer
from llmc.artifacts.plan_schema import STEP_INPUTS as STEP_INPUT_DTYPES
from llmc.errors import UserError

from .rope import cos_sin_cache
from .spec import ModelSpec
from .tensor_parallel import VOCAB_START

ops = torch.ops.llmc

# name -> torch dtype of the per-step inputs the runtime fills (see docs/FORMAT.md)
STEP_INPUTS = {name: getattr(torch, dtype) for name, dtype in STEP_INPUT_DTYPES.items()}


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


def rope_tables(spec: ModelSpec, max_positions: int) -> dict[str, torch.Tensor]:
    """The cos/sin tables the traced graph reads: one, plus one for sliding layers with their own base."""
    dim = spec.rotary_dim or spec.head_dim
    original = spec.rope_scaling.get("original_max_position_embeddings", max_positions)
    if spec.rope_scaling.get("rope_type") == "longrope" and max_positions > original:
        raise UserError(f"--max-seq-len {max_positions} is past original_max_position_embeddings {original}, where longrope "
                        f"switches to its long factors, which a bundle does not do; build with --max-seq-len {original} or less")
    tables = {ROPE_TABLE: cos_sin_cache(dim, spec.rope_theta, spec.rope_scaling, max_positions)}
    if spec.local_rope:
        local = {k: v for k, v in spec.local_rope.items() if k != "rope_theta"}
        tables[LOCAL_ROPE_TABLE] = cos_sin_cache(dim, float(spec.local_rope["rope_theta"]), local, max_positions)
    return tables


def trace(spec: ModelSpec, params: dict[str, torch.Tensor], tensor_parallel_size: int = 1) -> torch.fx.GraphModule:
    """The step's graph; with tensor parallelism, one rank's (`spec` is then its rank_spec)."""
    b = _Builder()
    inp = {name: b.placeholder(f"input:{name}") for name in STEP_INPUTS}
    w = {name: b.placeholder(f"weight:{name}") for name in sorted(params)}
    kv = [(b.placeholder(f"kv:k:{i}"), b.placeholder(f"kv:v:{i}")) for i in range(spec.num_layers)]
    max_query_len = b.placeholder("const:max_query_len")
    layer = Layer(spec, b, w, inp, max_query_len, tensor_parallel_size)

    if tensor_parallel_size == 1:
        h = b.name(ops.embedding(inp["input_ids"], w["embed_tokens.weight"]), "embed_tokens")
    else:  # each rank gathers the ids in its vocabulary slice, zeros for the rest; the sum is the embedding
        h = b.name(ops.vocab_parallel_embedding(inp["input_ids"], w["embed_tokens.weight"], w[VOCAB_START]), "embed_tokens")
        h = b.name(ops.all_reduce(h), "embed_tokens_all_reduce")
    if spec.embed_scale:
        h = b.name(ops.scale(h, spec.embed_scale), "embed_scale")
    residual = None
    for i in range(spec.num_layers):
        if residual is not None:
            h = b.name(ops.add(h, residual), f"layers_{i}_residual")
        h, residual = layer(i, h, kv[i])
    h = b.name(ops.add(h, residual), "final_residual")
    x = b.name(ops.rms_norm(h, w["norm.weight"], spec.rms_norm_eps), "norm")
    head = w["embed_tokens.weight"] if spec.tie_word_embeddings or "lm_head.weight" not in w else w["lm_head.weight"]
    logits = b.name(ops.lm_head(x, head, inp["logits_indices"]), "lm_head")
    if tensor_parallel_size > 1:  # this rank's vocabulary slice of the logits -> all of them, on every rank
        logits = b.name(ops.all_gather(logits, tensor_parallel_size), "lm_head_all_gather")
    if spec.final_soft_cap:
        logits = b.name(ops.soft_cap(logits, spec.final_soft_cap), "final_soft_cap")
    edited = b.name(ops.edit_logits(logits, inp["logit_edit_index"], inp["logit_edit_values"], inp["allowed_bitmask"],
                                    inp["bitmask_on"]), "edit_logits")
    tokens = b.name(ops.sample(edited, inp["temperature"], inp["top_k"], inp["top_p"], inp["min_p"], inp["uniform"]),
                    "sample")
    lp = b.name(ops.logprobs(logits, tokens, inp["logprob_token_ids"], inp["num_logprobs"]), "logprobs")
    b.graph.output({"logits": logits.node, "next_tokens": tokens.node, "token_logprobs": lp[0].node,
                    "top_token_ids": lp[1].node, "top_logprobs": lp[2].node})
    return torch.fx.GraphModule(torch.nn.Module(), b.graph)
