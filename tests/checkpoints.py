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
    # Llama with linear rope scaling, MHA, untied
    "llama_linear": ("LlamaConfig", dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False,
                                        rope_scaling={"rope_type": "linear", "factor": 2.0})),
}


def make_checkpoint(family: str, out: Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    import transformers

    config_name, extra = FAMILIES[family]
    config = getattr(transformers, config_name)(**TINY, **extra)
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
