"""The supported families: each a description (see `description.py`)."""

from .description import FUSED_ATTENTION, FUSED_MLP, LLAMA_ATTENTION, SANDWICH_NORMS, Family, Moe

QWEN_MOE = Moe(
    router="model.layers.{}.mlp.gate.weight",
    experts=("model.layers.{}.mlp.experts.{e}.gate_proj.weight", "model.layers.{}.mlp.experts.{e}.up_proj.weight",
             "model.layers.{}.mlp.experts.{e}.down_proj.weight"),
    stacked=("model.layers.{}.mlp.experts.gate_up_proj", "model.layers.{}.mlp.experts.down_proj"),
    num_experts=("num_experts", "num_local_experts"), top_k=("num_experts_per_tok",), intermediate=("moe_intermediate_size",),
    norm_topk_prob="norm_topk_prob", dense_layers=True,
)
MIXTRAL_MOE = Moe(
    router="model.layers.{}.block_sparse_moe.gate.weight",
    experts=("model.layers.{}.block_sparse_moe.experts.{e}.w1.weight",
             "model.layers.{}.block_sparse_moe.experts.{e}.w3.weight",
             "model.layers.{}.block_sparse_moe.experts.{e}.w2.weight"),
    stacked=("model.layers.{}.mlp.experts.gate_up_proj", "model.layers.{}.mlp.experts.down_proj"),
    num_experts=("num_local_experts",), top_k=("num_experts_per_tok",), intermediate=("intermediate_size",),
    norm_topk_prob=None, dense_layers=False,
)
GEMMA = dict(attention={**LLAMA_ATTENTION, **SANDWICH_NORMS}, sandwich_norms=True, norm_plus_one=True, embed_scale=True,
             activation_field="hidden_activation", soft_caps=True, sliding_window="gemma")

FAMILIES = {
    "LlamaForCausalLM": Family(),
    "MistralForCausalLM": Family(sliding_window="all"),
    "Qwen2ForCausalLM": Family(sliding_window="layer_types"),
    "Qwen3ForCausalLM": Family(qk_norm=True, sliding_window="layer_types"),
    "Qwen3MoeForCausalLM": Family(qk_norm=True, sliding_window="layer_types", moe=QWEN_MOE),
    "MixtralForCausalLM": Family(sliding_window="all", moe=MIXTRAL_MOE),
    "Gemma2ForCausalLM": Family(**GEMMA, sliding_pattern=2),
    "Gemma3ForCausalLM": Family(**GEMMA, qk_norm=True, local_rope=True, sliding_pattern=6),
    "Phi3ForCausalLM": Family(attention=FUSED_ATTENTION, mlp=FUSED_MLP, sliding_window="all", partial_rotary=True),
}
