"""The bundle cache: a hit is the full build's bytes; anything that changes the bytes misses; entries are
verified, bounded, and only llmc's own files are ever deleted."""

import hashlib
import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

import llmc
from checkpoints import make_checkpoint
from llmc.aot import build_key as build_key_module
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
from llmc.artifacts.bundle_cache import BundleCache
from llmc.cli.main import main

CONFIG = dict(max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16)


def _digests(bundle):
    return {p.relative_to(bundle).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "cache"))
    return BundleCache()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint("llama", tmp_path_factory.mktemp("bc") / "hf", dtype=torch.bfloat16)


def test_hit_is_byte_identical_to_a_full_build(model, tmp_path, cache):
    first = build(model, tmp_path / "a", BuildConfig(**CONFIG))
    assert not first.from_cache and cache.info()["entries"] == 1
    hit = build(model, tmp_path / "b", BuildConfig(**CONFIG))
    assert hit.from_cache and hit.manifest == first.manifest
    full = build(model, tmp_path / "c", BuildConfig(**CONFIG), use_cache=False)
    assert not full.from_cache
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b") == _digests(tmp_path / "c")


def _key(model, tmp_path, **config):
    return build(model, tmp_path / "k", BuildConfig(**{**CONFIG, **config}), stop_after="ingest").build_key


def test_key_changes_with_every_input_option_and_tool(model, tmp_path, monkeypatch):
    base = _key(model, tmp_path)
    assert _key(model, tmp_path) == base
    keys = {"max_seq_len": _key(model, tmp_path, max_seq_len=32), "dtype": _key(model, tmp_path, dtype="float32"),
            "max_batch_size": _key(model, tmp_path, max_batch_size=4), "kv_block_size": _key(model, tmp_path, kv_block_size=32),
            "max_num_batched_tokens": _key(model, tmp_path, max_num_batched_tokens=32),
            "op_priority": _key(model, tmp_path, op_priority={"rms_norm": ("native",)}),
            "selftest_prompt": _key(model, tmp_path, selftest_prompt="hello"),
            "target": _key(model, tmp_path, target="sm90")}
    edited = tmp_path / "edited"
    shutil.copytree(model, edited)
    data = bytearray((edited / "model.safetensors").read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (edited / "model.safetensors").write_bytes(bytes(data))
    keys["weights"] = _key(edited, tmp_path)
    config = json.loads((edited / "tokenizer_config.json").read_text())
    (edited / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": "w9"}))
    keys["tokenizer"] = _key(edited, tmp_path)
    original = build_key_module.toolchain_versions
    monkeypatch.setattr(build_key_module, "toolchain_versions", lambda t: {**original(t), "triton": "0.0.0"})
    monkeypatch.setattr("llmc.aot.stages.toolchain_versions", build_key_module.toolchain_versions)
    keys["toolchain"] = _key(model, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(llmc, "__version__", "9.9.9")
    keys["llmc version"] = _key(model, tmp_path)
    monkeypatch.undo()
    monkeypatch.setattr(build_key_module, "source_digest", lambda: "0" * 64)  # an edited llmc, same version string
    keys["llmc source"] = _key(model, tmp_path)
    same = [name for name, key in keys.items() if key == base]
    assert not same, f"the build key ignores {same}"
    assert len(set(keys.values())) == len(keys)


def test_a_damaged_entry_is_dropped_and_rebuilt(model, tmp_path, cache):
    first = build(model, tmp_path / "a", BuildConfig(**CONFIG))
    entry = cache.entry(first.manifest["build_key"])
    os.unlink(entry / "selftest.json")  # a hard link: the built bundle keeps its copy
    (entry / "selftest.json").write_text("{}")
    again = build(model, tmp_path / "b", BuildConfig(**CONFIG))
    assert not again.from_cache and _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert build(model, tmp_path / "c", BuildConfig(**CONFIG)).from_cache  # stored again


def test_least_recently_used_entries_go_first(model, tmp_path, cache):
    keys = [build(model, tmp_path / f"b{n}", BuildConfig(**{**CONFIG, "max_seq_len": n})).manifest["build_key"]
            for n in (16, 32, 48)]
    os.utime(cache.entry(keys[0]), (1, 1))
    os.utime(cache.entry(keys[1]), (2, 2))
    size = cache.info()["bytes"]
    small = BundleCache(max_bytes=size - 1)
    assert small.evict() == [keys[0]]
    assert {p.name for p in cache.root.iterdir()} == {keys[1], keys[2]}


def test_cache_clear_removes_only_what_llmc_wrote(model, tmp_path, cache):
    build(model, tmp_path / "a", BuildConfig(**CONFIG))
    (cache.root / "notes.txt").write_text("mine")
    (cache.root / "my-folder").mkdir()
    kernels = cache.root.parent / "kernels"
    kernels.mkdir(parents=True, exist_ok=True)
    (kernels / "README").write_text("mine too")
    result = CliRunner().invoke(main, ["cache", "clear"], catch_exceptions=False)
    assert result.exit_code == 0 and "1 bundle" in result.output, result.output
    assert sorted(p.name for p in cache.root.iterdir()) == ["my-folder", "notes.txt"]
    assert (kernels / "README").read_text() == "mine too"
    info = CliRunner().invoke(main, ["cache", "info"], catch_exceptions=False)
    assert "bundles: 0" in info.output


def test_no_cache_flag_builds_every_stage(model, tmp_path, cache):
    args = ["build", str(model), "--max-seq-len", "64", "--max-batch-size", "2", "--max-num-batched-tokens", "16"]
    assert CliRunner().invoke(main, [*args, "-o", str(tmp_path / "a")], catch_exceptions=False).exit_code == 0
    hit = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "b")], catch_exceptions=False)
    assert "from the bundle cache" in hit.output
    full = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "c"), "--no-cache"], catch_exceptions=False)
    assert full.exit_code == 0 and "from the bundle cache" not in full.output
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b") == _digests(tmp_path / "c")
