"""Weights as a stream: the streamed bundle equals one built the simple way, and memory does not grow with the model."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch

from checkpoints import FAMILIES, make_checkpoint
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
from llmc.artifacts import verify_bundle

CONFIG = dict(max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_streamed_bundle_equals_the_simple_build(family, tmp_path):
    model = make_checkpoint(family, tmp_path / "hf", dtype=torch.bfloat16)
    config = BuildConfig(**CONFIG)
    out = tmp_path / "bundle"
    manifest = build(model, out, config, use_cache=False).manifest
    fused = build(model, tmp_path / "unused", config, stop_after="fuse")
    # the simple way: every tensor in memory, one safetensors.torch.save
    simple = {name: weight.load() for name, weight in fused.weights.items()}
    assert (out / "weights" / "model.safetensors").read_bytes() == safetensors.torch.save(simple)
    streamed = safetensors.torch.load_file(out / "weights" / "model.safetensors")
    hf = safetensors.torch.load_file(model / "model.safetensors")
    assert torch.equal(streamed["embed_tokens.weight"], hf["model.embed_tokens.weight"])
    attn, mlp = "model.layers.1.self_attn.", "model.layers.0.mlp."
    if attn + "q_proj.weight" in hf:  # separate q/k/v in the checkpoint: concatenated at build
        qkv = torch.cat([hf[attn + f"{p}_proj.weight"] for p in "qkv"])
        assert torch.equal(streamed["layers.1.qkv_proj.weight"], qkv)
    if mlp + "gate_proj.weight" in hf:  # a dense MLP
        gate_up = torch.cat([hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"]])
        assert torch.equal(streamed["layers.0.gate_up_proj.weight"], gate_up)
    planned = build(model, tmp_path / "unused", config, stop_after="plan")
    for name, plan in planned.plans.items():
        assert json.loads((out / "plans" / f"{name}.json").read_text()) == plan
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert set(manifest["files"]) == set(files)
    for rel, path in files.items():  # digests computed while writing equal the file's
        assert manifest["files"][rel]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify_bundle(out).ok


def _checkpoint(out: Path, layers: int) -> Path:
    from checkpoints import llama_of_layers

    return llama_of_layers(out, layers)


# VmHWM is this process image's peak RSS; ru_maxrss would keep the (large) pytest parent's across exec
_CHILD = """
import sys
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
build(sys.argv[1], sys.argv[2], BuildConfig(max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16), use_cache=False)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def _peak_rss(model: Path, out: Path) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(out)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_memory_does_not_grow_with_the_model(tmp_path):
    small, large = _checkpoint(tmp_path / "small", 3), _checkpoint(tmp_path / "large", 14)
    size = {m: (m / "model.safetensors").stat().st_size for m in (small, large)}
    assert 40e6 < size[small] < 70e6 and 180e6 < size[large] < 230e6
    rss = {m: _peak_rss(m, tmp_path / f"{m.name}.llmc") for m in (small, large)}
    grown, checkpoint_grown = rss[large] - rss[small], size[large] - size[small]
    # the largest output tensor (lm_head, 8 MB) is the same in both; the rest must not be held
    assert grown < 0.2 * checkpoint_grown, f"peak RSS grew {grown / 1e6:.0f} MB for {checkpoint_grown / 1e6:.0f} MB more weights"
    assert rss[small] > 100e6  # a real measurement of the child, not a number it inherited


def test_the_scan_hashes_every_input_file_in_order(tmp_path):
    import llmc.aot.checkpoint as checkpoint
    from llmc.aot.ingest import scan_checkpoint

    model = make_checkpoint("qwen2", tmp_path / "hf")
    want = hashlib.sha256()
    for path in sorted(p for p in model.iterdir() if p.suffix in (".json", ".safetensors", ".model", ".txt")):
        want.update(path.name.encode() + b"\0" + path.read_bytes())
    original = checkpoint.CHUNK
    try:
        checkpoint.CHUNK = 4096  # many chunks: the hashing thread overlaps the reads
        digests = {scan_checkpoint(model).digest.hexdigest() for _ in range(5)}
    finally:
        checkpoint.CHUNK = original
    assert digests == {want.hexdigest()}
