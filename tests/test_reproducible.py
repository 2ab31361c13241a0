"""Bit-identical bundles: same checkpoint, options and toolchain -> the same bytes, whatever else differs."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from checkpoints import make_checkpoint
from clean_build import finish, llmc

BUILD = ["build", "--target", "sm90", "--dtype", "bfloat16", "--max-seq-len", "64", "--max-batch-size", "4",
         "--max-num-batched-tokens", "32", "--no-cache"]  # every stage runs: the bundle cache would hide a difference
# torch thread counts x CPU vector instruction sets: none may change a byte of the bundle
MACHINES = [dict(OMP_NUM_THREADS=threads, ATEN_CPU_CAPABILITY=capability)
            for threads in (1, 2) for capability in ("default", "avx2", "avx512")]


def _digests(bundle: Path) -> dict[str, str]:
    return {str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file()}


def _build(model: Path, out: Path, cwd: Path, cache: Path, **env) -> subprocess.Popen:
    return llmc(*BUILD, model, "-o", out, cwd=cwd, wait=False, LLMC_CACHE_DIR=cache, **env)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint("qwen3", tmp_path_factory.mktemp("repro") / "hf")


@pytest.fixture(scope="module")
def first(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("first")
    finish(_build(model, root / "out" / "a.llmc", root / "cwd", root / "cache", TZ="UTC"))
    return root


def test_cold_builds_are_bit_identical(model, first, tmp_path):
    out = tmp_path / "elsewhere" / "b.llmc"
    output = finish(_build(model, out, tmp_path / "other-cwd", tmp_path / "other-cache",
                            TZ="Asia/Kolkata", SOURCE_DATE_EPOCH="1700000000"))
    assert "from the cache" in output
    assert _digests(out) == _digests(first / "out" / "a.llmc")
    assert any(name.endswith(".cubin") for name in _digests(out))


def test_warm_rebuild_compiles_nothing_and_is_identical(model, first, tmp_path):
    output = finish(_build(model, tmp_path / "warm.llmc", tmp_path, first / "cache"))
    assert " 0 kernels compiled" in output, output
    assert _digests(tmp_path / "warm.llmc") == _digests(first / "out" / "a.llmc")


def test_concurrent_builds_share_a_cache(model, first, tmp_path):
    cache = tmp_path / "shared-cache"
    procs = [_build(model, tmp_path / f"c{i}.llmc", tmp_path / f"cwd{i}", cache) for i in range(2)]
    for proc in procs:
        finish(proc)
    reference = _digests(first / "out" / "a.llmc")
    assert _digests(tmp_path / "c0.llmc") == reference == _digests(tmp_path / "c1.llmc")
    leftovers = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith((".bin", ".json"))]
    assert not leftovers, leftovers


def test_no_paths_times_or_hosts_in_the_bundle(model, first):
    import socket

    bundle = first / "out" / "a.llmc"
    needles = [str(model).encode(), str(first).encode(), socket.gethostname().encode(), b"/tmp/", b"/root/", b"/home/"]
    for path in bundle.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found = [n for n in needles if n and n in data]
            assert not found, f"{path.relative_to(bundle)} contains {found}"


def test_every_float_is_independent_of_threads_and_vector_instructions(model, first, tmp_path):
    """Selftest figures, rope tables and everything else: the same bytes from fresh processes with 1 or 2 torch
    threads and each CPU capability torch dispatches to (issue 14, item 10)."""
    reference = _digests(first / "out" / "a.llmc")
    for pair in range(0, len(MACHINES), 2):
        procs = [_build(model, tmp_path / f"m{i}.llmc", tmp_path / f"cwd{i}", first / "cache", **MACHINES[i])
                 for i in range(pair, pair + 2)]
        for proc in procs:
            finish(proc)
    for i, machine in enumerate(MACHINES):
        got = _digests(tmp_path / f"m{i}.llmc")
        assert got == reference, f"{machine}: {sorted(k for k in got if got[k] != reference.get(k))} differ"


_ROPE = ("import hashlib, sys; from llmc.aot.rope import cos_sin_cache; "
         "t = cos_sin_cache(32, 1e6, {}, 512); u = cos_sin_cache(128, 5e5, {'rope_type': 'llama3', 'factor': 8.0, "
         "'low_freq_factor': 1.0, 'high_freq_factor': 4.0, 'original_max_position_embeddings': 8192}, 2048); "
         "print(hashlib.sha256(t.numpy().tobytes() + u.numpy().tobytes()).hexdigest())")


def test_rope_tables_in_many_fresh_processes():
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = [subprocess.Popen([sys.executable, "-c", _ROPE], env={**env, **{k: str(v) for k, v in machine.items()}},
                              stdout=subprocess.PIPE, text=True)
             for _ in range(2) for machine in MACHINES]
    digests = {proc.communicate(timeout=300)[0].strip() for proc in procs}
    assert len(digests) == 1, digests


def test_rope_table_is_the_correctly_rounded_cos_and_sin():
    import math

    import numpy as np

    from llmc.aot.rope import cos_sin_cache, inverse_frequencies

    table = cos_sin_cache(32, 1e6, {}, 512).numpy()
    inv = inverse_frequencies(32, 1e6, {}).numpy()
    for pos in (0, 1, 255, 511):
        for i, f in enumerate(inv):
            angle = float(np.float32(pos * float(f)))
            assert table[pos, i] == np.float32(math.cos(angle)) and table[pos, 16 + i] == np.float32(math.sin(angle))
