"""What a family is: which config fields say what, and where its weights live under Hugging Face names.

A description holds no code path of its own: the one tracer and the one ingest read it. Weight
names are templates: "{}" is the layer index, "{e}" the expert index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# IR name -> HF name of the Llama-shaped block, which most families keep.
LLAMA_GLOBAL = {
    "embed_tokens.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight",
}
LLAMA_ATTENTION = {
    "input_layernorm.weight": "model.layers.{}.input_layernorm.weight",
    "post_attention_layernorm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "q_proj.weight": "model.layers.{}.self_attn.q_proj.weight",
    "k_proj.weight": "model.layers.{}.self_attn.k_proj.weight",
    "v_proj.weight": "model.layers.{}.self_attn.v_proj.weight",
    "o_proj.weight": "model.layers.{}.self_attn.o_proj.weight",
}
LLAMA_ATTENTION_BIAS = {
    "q_proj.bias": "model.layers.{}.self_attn.q_proj.bias",
    "k_proj.bias": "model.layers.{}.self_attn.k_proj.bias",
    "v_proj.bias": "model.layers.{}.self_attn.v_proj.bias",
    "o_proj.bias": "model.layers.{}.self_attn.o_proj.bias",
}
QK_NORM = {
    "q_norm.weight": "model.layers.{}.self_attn.q_norm.weight",
    "k_norm.weight": "model.layers.{}.self_attn.k_norm.weight",
}
SANDWICH_NORMS = {
    "pre_feedforward_layernorm.weight": "model.layers.{}.pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight": "model.layers.{}.post_feedforward_layernorm.weight",
}
LLAMA_MLP = {
    "gate_proj.weight": "model.layers.{}.mlp.gate_proj.weight",
    "up_proj.weight": "model.layers.{}.mlp.up_proj.weight",
    "down_proj.weight": "model.layers.{}.mlp.down_proj.weight",
}
LLAMA_MLP_BIAS = {
    "gate_proj.bias": "model.layers.{}.mlp.gate_proj.bias",
    "up_proj.bias": "model.layers.{}.mlp.up_proj.bias",
    "down_proj.bias": "model.layers.{}.mlp.down_proj.bias",
}
FUSED_ATTENTION = {  # Phi-3: q/k/v and gate/up stored as one tensor each
    "input_layernorm.weight": "model.layers.{}.input_layernorm.weight",
    "post_attention_layernorm.weight": "model.layers.{}.post_attention_layernorm.weight",
    "qkv_proj.weight": "model.layers.{}.self_attn.qkv_proj.weight",
    "o_proj.weight": "model.layers.{}.self_attn.o_proj.weight",
}
FUSED_MLP = {
    "gate_up_proj.weight": "model.layers.{}.mlp.gate_up_proj.weight",
    "down_proj.weight": "model.layers.{}.mlp.down_proj.weight",
}


@dataclass(frozen=True)
class Moe:
    """Where a family keeps its router and experts, and how the config says which layers are sparse."""

    router: str  # HF name of the [E, H] router weight
    experts: tuple[str, str, str]  # HF names of one expert's gate, up, down weights ("{e}" = expert)
    stacked: tuple[str, str]  # HF names of all experts' [E, 2I, H] gate_up and [E, H, I] down (transformers 5)
    num_experts: tuple[str, ...]  # config fields, first present wins
    top_k: tuple[str, ...]
    intermediate: tuple[str, ...]  # config fields of one expert's width
    norm_topk_prob: str | None  # config field; None: always renormalised (Mixtral)
    dense_layers: bool  # mlp_only_layers / decoder_sparse_step pick dense layers


@dataclass(frozen=True)
class Family:
    attention: dict = field(default_factory=lambda: LLAMA_ATTENTION)  # required, per layer
    optional: dict = field(default_factory=lambda: {**LLAMA_ATTENTION_BIAS, **LLAMA_MLP_BIAS})  # may be absent
    mlp: dict = field(default_factory=lambda: LLAMA_MLP)  # dense layers' MLP
    qk_norm: bool = False
    sliding_window: str = "none"  # how the config says which layers slide: none | all | layer_types | gemma
    sandwich_norms: bool = False  # pre/post attention and feed-forward norms (Gemma 2/3)
    norm_plus_one: bool = False  # RMS norm scales by (1 + w): folded into the weight at build
    embed_scale: bool = False  # embeddings times sqrt(hidden_size)
    activation_field: str = "hidden_act"
    soft_caps: bool = False  # attn_logit_softcapping / final_logit_softcapping / query_pre_attn_scalar
    local_rope: bool = False  # sliding layers have their own rope base (rope_parameters per layer type)
    partial_rotary: bool = False  # partial_rotary_factor
    sliding_pattern: int = 0  # "gemma" windows without layer_types: every n-th layer is full (sliding_window_pattern)
    moe: Moe | None = None
