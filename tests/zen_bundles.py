"""The example model as a float32 cpu bundle, built on one torch thread: what the engine and server
tests run on. On a shared CI machine extra threads spin against other work, several times slower."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

ZEN = Path(__file__).resolve().parents[1] / "examples" / "zen-llama"


@contextlib.contextmanager
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def build_zen(out: Path, *, use_cache: bool = True, **config) -> Path:
    """`out`, a float32 cpu bundle of the example (KV blocks of 16 unless `config` says otherwise)."""
    from llmc.aot.build import BuildConfig, build

    with one_torch_thread():
        build(ZEN, out, BuildConfig(**{"target": "cpu", "dtype": "float32", "kv_block_size": 16, **config}),
              use_cache=use_cache)
    return out
