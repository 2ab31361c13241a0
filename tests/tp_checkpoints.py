"""Tiny checkpoints of every family that tensor parallelism can split: tests/checkpoints.py's configs with a
vocabulary of 212 (= 4 * 53) instead of the prime 211, so 2 and 4 ranks divide it; and the bundles built from them."""

from __future__ import annotations

from pathlib import Path

from checkpoints import make_checkpoint

VOCAB = 212
BUILD = dict(max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16)


def make_tp_checkpoint(family: str, out: Path, vocab_size: int = VOCAB, seed: int = 0) -> Path:
    return make_checkpoint(family, out, seed=seed, vocab_size=vocab_size)


def build_tp(model: Path, out: Path, size: int, target: str = "cpu") -> dict:
    from llmc.aot.build import build
    from llmc.aot.config import BuildConfig

    return build(model, out, BuildConfig(target=target, tensor_parallel_size=size, **BUILD), use_cache=False).manifest
