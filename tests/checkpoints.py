"""Random-weight Hugging Face checkpoints built from real configs, shrunk to test size.

Each family's config keeps the real model's features (GQA/MQA, explicit head_dim, attention
bias, q/k norm, tied embeddings, sliding window, rope scaling) with tiny dimensions.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, vocab_size=211, max_position_embeddings=256,
            initializer_range=0.15)

FAMILIES = {
    # Llama-3.2-1B: GQA, tied embeddings, llama3 rope scaling
    "llama": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
                                 rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    # Mistral-7B-v0.1: GQA, sliding window
    "mistral": ("MistralConfig", dict(num_attention_heads=4, num_key_value_heads=1, sliding_window=5, tie_word_embeddings=False,
                                     rope_theta=10000.0)),
    # Qwen2.5-0.5B: attention bias on q/k/v, tied embeddings
    "qwen2": ("Qwen2Config", dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=1000000.0)),
    # Qwen3-0.6B: q/k norm, explicit head_dim larger than hidden/heads
    "qwen3": ("Qwen3Config", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                                 rope_theta=1000000.0)),
    # Qwen3-30B-A3B: q/k norm, 8 experts top-2 unnormalised, a dense layer among MoE ones (mlp_only_layers)
    "qwen3_moe": ("Qwen3MoeConfig", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
                                         num_experts_per_tok=2, moe_intermediate_size=32, norm_topk_prob=False,
                                         mlp_only_layers=[1], decoder_sparse_step=1, tie_word_embeddings=False,
                                         rope_theta=1000000.0)),
    # Mixtral-8x7B: top-2 of 4 experts (renormalised), MQA, a window shorter than the prompt
    "mixtral": ("MixtralConfig", dict(num_attention_heads=4, num_key_value_heads=1, num_local_experts=4,
                                      num_experts_per_tok=2, sliding_window=7, tie_word_embeddings=False)),
    # Gemma-3-1B: 1 + w norms, sandwich norms, GeGLU, q/k norm, sliding/full layers with their own rope bases,
    # query_pre_attn_scalar != head_dim, tied head (small initial weights: else a random model repeats one token)
    "gemma3": ("Gemma3TextConfig", dict(initializer_range=0.02, num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=6,
                                        layer_types=["sliding_attention", "full_attention"], query_pre_attn_scalar=24,
                                        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                         "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}})),
    # Gemma-2-2B: attention and final logit soft-caps (small, so that they bite), alternating windows; untied,
    # since a tied head over embeddings scaled by sqrt(hidden) makes a random model repeat its last token
    "gemma2": ("Gemma2Config", dict(num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=6,
                                    query_pre_attn_scalar=16, attn_logit_softcapping=1.0, final_logit_softcapping=3.0,
                                    tie_word_embeddings=False)),
    # Phi-4-mini: q/k/v and gate/up stored fused, partial rotary (3/4 of each head rotates), tied head
    "phi3": ("Phi3Config", dict(num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.75,
                                tie_word_embeddings=True, pad_token_id=0)),
    # Phi-3-mini-128k / Phi-4-mini: longrope (short factors up to original_max_position_embeddings), partial rotary
    "phi3_longrope": ("Phi3Config", dict(num_attention_heads=4, num_key_value_heads=2, partial_rotary_factor=0.75,
                                         max_position_embeddings=512, original_max_position_embeddings=256, pad_token_id=0,
                                         rope_scaling={
                                             "rope_type": "longrope", "short_factor": [1.0, 1.3, 1.7, 2.2, 2.9, 3.5],
                                             "long_factor": [2.0, 2.5, 3.0, 4.0, 5.0, 6.0]})),
    # Llama with linear rope scaling, MHA, untied
    "llama_linear": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                                        rope_scaling={"rope_type": "linear", "factor": 2.0})),
}


def make_checkpoint(family: str, out: Path, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> Path:
    import transformers

    config_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**{**TINY, **extra, **overrides})
    config.eos_token_id = 2
    config.bos_token_id = 1
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():  # random norms, so a wrong norm weight shows up in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    write_tokenizer(out, config.vocab_size)
    return out


def write_tokenizer(out: Path, vocab_size: int) -> None:
    """A word-level tokenizer: '<unk>' 0, '<s>' 1, '</s>' 2, then 'w3' ... and a chat template."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(out / "tokenizer.json"))
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}{% if add_generation_prompt %}w5{% endif %}"
    (out / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "chat_template": template, "name_or_path": str(out),
    }))


def llama_of_layers(out: Path, layers: int) -> Path:
    """A Llama of `layers` layers, each about 12 MB in float32: builds of two sizes show memory growth."""
    import transformers

    config = transformers.LlamaConfig(hidden_size=512, intermediate_size=1536, num_hidden_layers=layers, num_attention_heads=8,
                                      num_key_value_heads=8, vocab_size=4096, max_position_embeddings=256,
                                      tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(out)
    write_tokenizer(out, config.vocab_size)
    return out
