"""The README's main job, through the real CLI: build the embedded example, run it, inspect, pack, verify."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "zen-llama"


def llmc(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmc.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("zen") / "zen.llmc"
    proc = llmc("build", EXAMPLE, "-o", out, "--max-seq-len", "512")
    assert proc.returncode == 0, proc.stderr
    assert "0 kernels compiled" in proc.stdout
    return out


def test_run_continues_the_zen(bundle):
    proc = llmc("run", bundle, "--prompt", "Beautiful is", "--max-tokens", "24")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Beautiful is better than ugly.\nExplicit is better than implicit."), proc.stdout


def test_inspect_names_every_node_impl(bundle):
    proc = llmc("inspect", bundle, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["manifest"]["model"]["architecture"] == "LlamaForCausalLM"
    nodes = data["impls"]["nodes"]
    assert nodes and all(entry["provider"] == "native" for entry in nodes.values())
    assert any(key.startswith("decode_b1/") for key in nodes) and any(key.startswith("prefill_t") for key in nodes)
    text = llmc("inspect", bundle).stdout
    assert "decode [1, 2, 4, 8, 16, 32, 64, 128, 256]" in text and "qkv_rope_cache" in text


def test_pack_then_run_and_verify_the_archive(bundle, tmp_path):
    archive = tmp_path / "zen.llmc.tar"
    assert llmc("pack", bundle, "-o", archive).returncode == 0
    proc = llmc("verify", "--run", archive)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "selftest passed" in proc.stdout
    proc = llmc("run", archive, "--prompt", "Errors should", "--max-tokens", "10")
    assert proc.returncode == 0 and proc.stdout.startswith("Errors should never pass silently."), proc.stdout


def test_tampered_bundle_is_refused(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy.llmc"
    shutil.copytree(bundle, copy)
    weights = copy / "weights" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    proc = llmc("verify", copy)
    assert proc.returncode == 1 and "weights/model.safetensors" in proc.stdout
    proc = llmc("run", copy, "--prompt", "Beautiful is")
    assert proc.returncode == 2 and "sha256" in proc.stderr and "Traceback" not in proc.stderr
