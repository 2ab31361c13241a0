"""Train the embedded example model: a tiny Llama that has memorised the Zen of Python.

    python examples/train_zen.py [--out examples/zen-llama] [--steps N]

Deterministic: a fixed seed, one CPU thread and torch's deterministic algorithms, so a rerun
writes the same model.safetensors bytes.
"""

import argparse
import codecs
import contextlib
import io
import json
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

BOS, EOS = "<s>", "</s>"
VOCAB_SIZE = 384
WINDOW = 48  # tokens in a per-line window
SEED = 0
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def zen_text() -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


def train_tokenizer(text: str) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([text], trainer=trainer)
    bos = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]
    )
    return tokenizer


def write_tokenizer(tokenizer: Tokenizer, out: Path) -> None:
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_model(tokenizer: Tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.token_to_id(BOS),
        eos_token_id=tokenizer.token_to_id(EOS),
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, do_sample=False
    )
    return model


def training_batches(text: str, tokenizer: Tokenizer) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole text once (long-range recall), and a short window from each line (any line as prompt)."""
    line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    whole = len(tokenizer.encode(text).ids) + 1  # BOS, the text, EOS
    return [windows(text, tokenizer, [0], whole), windows(text, tokenizer, line_starts, WINDOW)]


def windows(text: str, tokenizer: Tokenizer, starts: list[int], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One row per start: BOS, the text from there on, EOS at the very end; labels -100 on padding."""
    eos = tokenizer.token_to_id(EOS)
    input_ids = torch.full((len(starts), length), eos)
    labels = torch.full((len(starts), length), -100)
    for row, start in enumerate(starts):
        ids = (tokenizer.encode(text[start:]).ids + [eos])[:length]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, 1 : len(ids)] = torch.tensor(ids[1:])  # BOS is never predicted
    return input_ids, labels


def train(model: LlamaForCausalLM, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        loss = sum(model(input_ids=input_ids, labels=labels).loss for input_ids, labels in batches)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    model.eval()


@torch.no_grad()
def greedy(model: LlamaForCausalLM, tokenizer: Tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = torch.tensor([tokenizer.encode(prompt).ids])
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :].tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "zen-llama")
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)

    text = zen_text()
    tokenizer = train_tokenizer(text)
    model = build_model(tokenizer)
    batches = training_batches(text, tokenizer)
    print(f"vocab {tokenizer.get_vocab_size()}, {sum(p.numel() for p in model.parameters())} params, "
          f"batches {[tuple(input_ids.shape) for input_ids, _ in batches]}")

    began = time.perf_counter()
    train(model, batches, args.steps)
    print(f"trained {args.steps} steps in {time.perf_counter() - began:.1f} s")

    continuation = greedy(model, tokenizer, "Beautiful is", 400)
    print(f"Beautiful is{continuation}")
    if not continuation.startswith(" better than ugly."):
        raise SystemExit("the model has not memorised the Zen: train for more --steps")

    model.save_pretrained(args.out, safe_serialization=True)
    write_tokenizer(tokenizer, args.out)


if __name__ == "__main__":
    main()
