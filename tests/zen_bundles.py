"""The example model as a float32 cpu bundle, built on one torch thread: what the engine and server
tests run on. On a shared CI machine extra threads spin against other work, several times slower."""

from __future__ import annotations

from pathlib import Path

from llmc.aot.selftest import one_thread as one_torch_thread

ZEN = Path(__file__).resolve().parents[1] / "examples" / "zen-llama"


def build_zen(out: Path, *, use_cache: bool = True, **config) -> Path:
    """`out`, a float32 cpu bundle of the example (KV blocks of 16 unless `config` says otherwise)."""
    from llmc.aot.build import BuildConfig, build

    with one_torch_thread():
        build(ZEN, out, BuildConfig(**{"target": "cpu", "dtype": "float32", "kv_block_size": 16, **config}),
              use_cache=use_cache)
    return out
