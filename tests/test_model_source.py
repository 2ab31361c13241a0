"""`llmc build ORG/NAME` resolves a Hugging Face id through huggingface_hub's cache, offline, nothing downloaded.

The cache is laid out as huggingface_hub lays it out: hub/models--org--name/{refs/main, snapshots/<rev>/...}.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoints import make_checkpoint

REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    repo = home / "hub" / "models--tiny-org--tiny-llama"
    make_checkpoint("llama", repo / "snapshots" / REV)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return home


def llmc(*args, hf_home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "TRITON_INTERPRET"}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "llmc.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_an_id_in_the_cache_builds_offline(hf_home, tmp_path):
    done = llmc("build", "tiny-org/tiny-llama", "-o", tmp_path / "a.llmc", "--max-seq-len", "32", hf_home=hf_home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    local = llmc("build", hf_home / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / REV, "-o", tmp_path / "b.llmc",
                 "--max-seq-len", "32", hf_home=hf_home, cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert (tmp_path / "a.llmc" / "manifest.json").read_bytes() == (tmp_path / "b.llmc" / "manifest.json").read_bytes()


def test_a_revision_in_the_cache_builds(hf_home, tmp_path):
    done = llmc("build", "tiny-org/tiny-llama", "--revision", REV, "-o", tmp_path / "a.llmc", "--max-seq-len", "32",
                hf_home=hf_home, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model, words", [
    ("other-org/not-cached", ["other-org/not-cached", "not in the Hugging Face cache", "HF_HUB_OFFLINE"]),
    ("./no/such/dir/", ["no such directory", "Hugging Face"]),
])
def test_what_cannot_be_resolved_is_one_line(hf_home, tmp_path, model, words):
    done = llmc("build", model, "-o", tmp_path / "x.llmc", hf_home=hf_home, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), done.stderr
    assert not (tmp_path / "x.llmc").exists()


def test_a_revision_for_a_local_directory_is_refused(hf_home, tmp_path):
    local = tmp_path / "model"
    shutil.copytree(hf_home / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / REV, local)
    done = llmc("build", local, "--revision", "main", "-o", tmp_path / "x.llmc", hf_home=hf_home, cwd=tmp_path)
    assert done.returncode == 2 and "--revision" in done.stderr, done.stderr
