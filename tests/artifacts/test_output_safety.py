"""`llmc build -o` replaces only what llmc provably wrote, cleans up after killed builds, and reports a full
disk or an unwritable cache in one line (exit 2, nothing written, nothing deleted)."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner

from checkpoints import make_checkpoint
from llmc.cli.main import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint("qwen2", tmp_path_factory.mktemp("safety") / "hf", dtype=torch.bfloat16)


def _build(model, out, *extra, cache=None):
    env = {"LLMC_CACHE_DIR": str(cache or out.parent / "cache")}
    return CliRunner().invoke(main, ["build", str(model), "-o", str(out), "--max-seq-len", "32", *extra],
                              catch_exceptions=False, env=env)


def _one_line_refusal(result, *words):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]


def _tree(path):
    return sorted((p.relative_to(path).as_posix(), p.read_bytes() if p.is_file() else None) for p in path.rglob("*"))


def test_a_directory_that_only_looks_like_a_bundle_is_kept(model, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format_version": 1}))
    (out / "holiday.jpg").write_bytes(b"precious")
    before = _tree(out)
    _one_line_refusal(_build(model, out), "photos", "not an llmc bundle")
    assert _tree(out) == before


def test_a_rebuild_keeps_a_bundle_someone_added_files_to(model, tmp_path):
    out = tmp_path / "bundle"
    assert _build(model, out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = _tree(out)
    _one_line_refusal(_build(model, out, "--no-cache"), "bundle")
    assert _tree(out) == before
    (out / "notes.txt").unlink()
    (out / "selftest.json").write_text("{}")  # an edited file: the manifest no longer verifies
    _one_line_refusal(_build(model, out, "--no-cache"), "bundle")


def test_an_unmodified_bundle_is_replaced(model, tmp_path):
    out = tmp_path / "bundle"
    assert _build(model, out).exit_code == 0
    assert _build(model, out, "--no-cache").exit_code == 0
    assert _build(model, out).exit_code == 0  # from the bundle cache, over the same bundle


def test_stale_staging_of_a_killed_build_is_removed(model, tmp_path):
    out = tmp_path / "bundle"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"bundle.tmp-{dead.pid}-abc123"
    (stale / "weights").mkdir(parents=True)
    (stale / "weights" / "model.safetensors").write_bytes(b"half")
    alive = tmp_path / "bundle.tmp-1-def456"  # pid 1 runs: another build may own it
    alive.mkdir()
    other = tmp_path / "bundle.tmp-notes"  # not a name llmc writes
    other.mkdir()
    assert _build(model, out).exit_code == 0
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_build_killed_midway_leaves_a_staging_dir_the_next_one_removes(model, tmp_path):
    out = tmp_path / "bundle"
    env = {**os.environ, "LLMC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TRITON_INTERPRET", None)
    slow = ("import time, llmc.artifacts.safetensors_stream as s; w = s.write\n"
            "def write(*a):\n    time.sleep(60); return w(*a)\n"
            "s.write = write\nfrom llmc.cli.main import main; main()")
    proc = subprocess.Popen([sys.executable, "-c", slow, "build", str(model), "-o", str(out), "--max-seq-len", "32"], env=env)
    for _ in range(600):
        if list(tmp_path.glob("bundle.tmp-*")):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("bundle.tmp-*")) and not out.exists()
    assert _build(model, out).exit_code == 0
    assert not list(tmp_path.glob("bundle.tmp-*"))


def test_a_full_disk_is_one_line(model, tmp_path, monkeypatch):
    import llmc.artifacts.safetensors_stream as stream

    def full(path, entries):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(stream, "write", full)
    out = tmp_path / "out" / "bundle"
    _one_line_refusal(_build(model, out, "--no-cache"), "No space left on device")
    assert not out.exists() and not list(out.parent.glob("bundle.tmp-*"))


def test_an_unwritable_cache_is_one_line_or_skipped(model, tmp_path):
    cache = tmp_path / "cache-is-a-file"
    cache.write_text("not a directory")
    out = tmp_path / "bundle"
    result = _build(model, out, cache=cache)  # the cpu target compiles nothing: only the bundle cache is skipped
    assert result.exit_code == 0, result.output
    assert cache.read_text() == "not a directory"
