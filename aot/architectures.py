"""Config fields every family shares; what differs per family is its description in `aot/families/`."""

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
