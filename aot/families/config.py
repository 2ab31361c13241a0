"""The per-family parts of a config.json, read as the family's description says.

Each function returns ModelSpec fields; a field the description needs that is missing or wrong is
a one-line UserError naming config.json and the field.
"""

from __future__ import annotations

from llmc.errors import UserError

from .description import Family

ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}
LAYER_TYPES = ("full_attention", "sliding_attention")


def _number(config: dict, name: str, kind: type, default=None):
    value = config.get(name, default)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) if kind is float else isinstance(value, int)
    if not ok or isinstance(value, bool) or value < 0:
        raise UserError(f"config.json: field {name!r} must be a non-negative {kind.__name__}, got {value!r}")
    return kind(value)


def layer_types(config: dict, num_layers: int, pattern: int = 0) -> list[str] | None:
    types = config.get("layer_types")
    if types is None:
        if not pattern:
            return None
        pattern = _number(config, "sliding_window_pattern", int, pattern) or pattern
        return ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(num_layers)]
    if not isinstance(types, list) or len(types) != num_layers:
        got = len(types) if isinstance(types, list) else repr(types)
        raise UserError(f"config.json: field 'layer_types' has {got} entries but num_hidden_layers is {num_layers}")
    unknown = [t for t in types if t not in LAYER_TYPES]
    if unknown:
        raise UserError(f"config.json: field 'layer_types' holds {unknown[0]!r}; known: {', '.join(LAYER_TYPES)}")
    return types


def sliding_windows(config: dict, family: Family, num_layers: int) -> tuple[int, ...]:
    style = family.sliding_window
    window = _number(config, "sliding_window", int, 0)
    if style == "all":
        return (window,) * num_layers
    if style == "gemma":
        types = layer_types(config, num_layers, family.sliding_pattern)
        return tuple(window if t == "sliding_attention" else 0 for t in types)
    if style == "layer_types":
        if not config.get("use_sliding_window") or not window:
            return (0,) * num_layers
        types = layer_types(config, num_layers)
        if types is None:
            first = int(config.get("max_window_layers", num_layers))
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
        return tuple(window if t == "sliding_attention" else 0 for t in types)
    return (0,) * num_layers


def activation(config: dict, family: Family) -> str:
    name = config.get(family.activation_field, config.get("hidden_act", "silu"))
    if name not in ACTIVATIONS:
        raise UserError(f"config.json: field {family.activation_field!r} is {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def rope(config: dict, family: Family) -> tuple[float, dict, dict]:
    """(rope_theta, scaling) of full-attention layers, and {rope_theta, scaling...} of sliding ones if they differ."""
    params = config.get("rope_parameters")
    if isinstance(params, dict) and isinstance(params.get("full_attention"), dict):  # per layer type
        full, local = params["full_attention"], params.get("sliding_attention") or params["full_attention"]
        theta = float(full.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in full.items() if k != "rope_theta"}
        return theta, scaling, (dict(local) if family.local_rope and local != full else {})
    if isinstance(params, dict):  # transformers 5 spelling
        theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    else:
        scaling = config.get("rope_scaling") or {}
        if not isinstance(scaling, dict):
            raise UserError("config.json: field 'rope_scaling' must be an object or null")
        theta = _number(config, "rope_theta", float, 10000.0)
    if scaling.get("rope_type", scaling.get("type")) == "longrope":  # the factor is the context's growth
        original = scaling.get("original_max_position_embeddings", config.get("original_max_position_embeddings"))
        if not isinstance(original, int) or original < 1:
            raise UserError("config.json: longrope scaling needs field 'original_max_position_embeddings'")
        scaling = {**scaling, "rope_type": "longrope", "original_max_position_embeddings": original,
                   "max_position_embeddings": config.get("max_position_embeddings", original)}
    local = {}
    if family.local_rope and config.get("rope_local_base_freq") is not None:
        local = {"rope_type": "default", "rope_theta": _number(config, "rope_local_base_freq", float)}
    return float(theta), dict(scaling), local


def rotary_dim(config: dict, family: Family, head_dim: int, scaling: dict) -> int:
    if not family.partial_rotary:
        return 0
    factor = scaling.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise UserError(f"config.json: field 'partial_rotary_factor' must be in (0, 1], got {factor!r}")
    dim = int(head_dim * factor)
    if dim % 2:
        raise UserError(f"config.json: field 'partial_rotary_factor' {factor} gives an odd rotary width {dim}")
    return 0 if dim == head_dim else dim


def moe(config: dict, family: Family, num_layers: int) -> dict:
    m = family.moe
    if m is None:
        return {}

    def first(names, what):
        for name in names:
            if config.get(name) is not None:
                return _number(config, name, int)
        raise UserError(f"config.json: missing required field {names[0]!r} (the model's {what})")

    if config.get("hidden_act", "silu") not in ("silu", "swish"):
        raise UserError(f"config.json: field 'hidden_act' is {config['hidden_act']!r}; llmc's experts use silu")
    experts, top_k = first(m.num_experts, "number of experts"), first(m.top_k, "experts per token")
    if not 0 < top_k <= experts:
        raise UserError(f"config.json: field {m.top_k[0]!r} is {top_k} but the model has {experts} experts")
    sparse = [True] * num_layers
    if m.dense_layers:
        only = config.get("mlp_only_layers") or []
        step = _number(config, "decoder_sparse_step", int, 1) or 1
        if not isinstance(only, list) or any(not isinstance(i, int) or not 0 <= i < num_layers for i in only):
            raise UserError(f"config.json: field 'mlp_only_layers' must list layer indices below {num_layers}")
        sparse = [i not in only and (i + 1) % step == 0 for i in range(num_layers)]
    renorm = True if m.norm_topk_prob is None else bool(config.get(m.norm_topk_prob, False))
    return dict(moe_layers=tuple(sparse), num_experts=experts, num_experts_per_tok=top_k,
                moe_intermediate_size=first(m.intermediate, "expert width"), norm_topk_prob=renorm)


def gemma(config: dict, family: Family, hidden_size: int) -> dict:
    if not family.soft_caps:
        return {}
    if config.get("use_bidirectional_attention"):
        raise UserError("config.json: field 'use_bidirectional_attention' is set (an embedding model); llmc builds causal decoders")
    scalar = _number(config, "query_pre_attn_scalar", float, 0.0)
    return dict(
        attention_scale=scalar ** -0.5 if scalar else 0.0,
        attn_soft_cap=_number(config, "attn_logit_softcapping", float, 0.0),
        final_soft_cap=_number(config, "final_logit_softcapping", float, 0.0),
        embed_scale=hidden_size ** 0.5 if family.embed_scale else 0.0,
        sandwich_norms=family.sandwich_norms,
    )
