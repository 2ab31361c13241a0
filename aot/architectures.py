"""Supported architectures, as data: HF weight names -> IR parameter names, and config fields.

All four families share HF's Llama naming; they differ in which optional tensors they carry
(attention bias, q/k norm) and how the config spells the sliding window. Adding a family that
keeps this naming is one entry in FAMILIES.
"""

from dataclasses import dataclass

# HF name -> IR name; "{}" is the layer index.
GLOBAL_WEIGHTS = {
    "model.embed_tokens.weight": "embed_tokens.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "lm_head.weight",
}
LAYER_WEIGHTS = {
    "model.layers.{}.input_layernorm.weight": "layers.{}.input_layernorm.weight",
    "model.layers.{}.post_attention_layernorm.weight": "layers.{}.post_attention_layernorm.weight",
    "model.layers.{}.self_attn.q_proj.weight": "layers.{}.q_proj.weight",
    "model.layers.{}.self_attn.k_proj.weight": "layers.{}.k_proj.weight",
    "model.layers.{}.self_attn.v_proj.weight": "layers.{}.v_proj.weight",
    "model.layers.{}.self_attn.o_proj.weight": "layers.{}.o_proj.weight",
    "model.layers.{}.mlp.gate_proj.weight": "layers.{}.gate_proj.weight",
    "model.layers.{}.mlp.up_proj.weight": "layers.{}.up_proj.weight",
    "model.layers.{}.mlp.down_proj.weight": "layers.{}.down_proj.weight",
}
OPTIONAL_LAYER_WEIGHTS = {
    "model.layers.{}.self_attn.q_proj.bias": "layers.{}.q_proj.bias",
    "model.layers.{}.self_attn.k_proj.bias": "layers.{}.k_proj.bias",
    "model.layers.{}.self_attn.v_proj.bias": "layers.{}.v_proj.bias",
    "model.layers.{}.self_attn.o_proj.bias": "layers.{}.o_proj.bias",
    "model.layers.{}.mlp.gate_proj.bias": "layers.{}.gate_proj.bias",
    "model.layers.{}.mlp.up_proj.bias": "layers.{}.up_proj.bias",
    "model.layers.{}.mlp.down_proj.bias": "layers.{}.down_proj.bias",
    "model.layers.{}.self_attn.q_norm.weight": "layers.{}.q_norm.weight",
    "model.layers.{}.self_attn.k_norm.weight": "layers.{}.k_norm.weight",
}

# IR dims <- HF config fields (first one present wins).
CONFIG_FIELDS = {
    "hidden_size": ("hidden_size",),
    "num_layers": ("num_hidden_layers",),
    "num_q_heads": ("num_attention_heads",),
    "intermediate_size": ("intermediate_size",),
    "vocab_size": ("vocab_size",),
}
OPTIONAL_CONFIG_FIELDS = {
    "num_kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "rms_norm_eps": ("rms_norm_eps",),
    "max_position_embeddings": ("max_position_embeddings",),
    "tie_word_embeddings": ("tie_word_embeddings",),
}


@dataclass(frozen=True)
class Family:
    qk_norm: bool  # layers carry q_norm / k_norm
    sliding_window: str  # how the config says which layers slide: "none" | "all" | "layer_types"


FAMILIES = {
    "LlamaForCausalLM": Family(qk_norm=False, sliding_window="none"),
    "MistralForCausalLM": Family(qk_norm=False, sliding_window="all"),
    "Qwen2ForCausalLM": Family(qk_norm=False, sliding_window="layer_types"),
    "Qwen3ForCausalLM": Family(qk_norm=True, sliding_window="layer_types"),
}
