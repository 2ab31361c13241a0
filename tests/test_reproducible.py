"""Bit-identical bundles: same checkpoint, options and toolchain -> the same bytes, whatever else differs."""

import hashlib
import subprocess
from pathlib import Path

import pytest

from checkpoints import make_checkpoint
from clean_build import finish, llmc

BUILD = ["build", "--target", "sm90", "--dtype", "bfloat16", "--max-seq-len", "64", "--max-batch-size", "4",
         "--max-num-batched-tokens", "32"]


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
