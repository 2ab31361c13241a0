"""`llmc build --target sm90 | sm80 | gfx942` on a machine with no GPU: real kernels for every node."""

import json

import pytest

from checkpoints import make_checkpoint
from clean_build import llmc

ELF = b"\x7fELF"
OPTIONS = ["--dtype", "bfloat16", "--max-seq-len", "64", "--max-batch-size", "4", "--max-num-batched-tokens", "32"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint("qwen3", tmp_path_factory.mktemp("gpu-targets") / "hf")


@pytest.mark.parametrize("target,suffix", [("sm90", ".cubin"), ("sm80", ".cubin"), ("gfx942", ".hsaco")])
def test_every_node_lowers_to_a_compiled_kernel(model, tmp_path, target, suffix):
    cache = tmp_path / "cache"
    first = llmc("build", model, "-o", tmp_path / "a.llmc", "--target", target, *OPTIONS, LLMC_CACHE_DIR=cache)
    assert " 0 from the cache" in first, first
    bundle = tmp_path / "a.llmc"
    lock = json.loads((bundle / "impls.lock.json").read_text())["nodes"]
    native = [k for k, v in lock.items() if v["provider"] == "native"]
    assert not native, f"nodes left on native: {native[:5]}"
    assert all("native" in v["rejected"] for v in lock.values())
    index = json.loads((bundle / "kernels" / "index.json").read_text())["kernels"]
    for entry in index.values():
        assert entry["file"].endswith(suffix) and (bundle / entry["file"]).read_bytes().startswith(ELF)
        assert [p["name"] for p in entry["params"][-2:]] == ["global_scratch", "profile_scratch"]
    for plan in (bundle / "plans").glob("*.json"):
        steps = json.loads(plan.read_text())["steps"]
        assert all(step["launches"] and all(launch["kernel"] in index for launch in step["launches"]) for step in steps)
    again = llmc("build", model, "-o", tmp_path / "b.llmc", "--target", target, *OPTIONS, LLMC_CACHE_DIR=cache)
    assert " 0 kernels compiled" in again, again


def test_native_on_a_gpu_target_is_refused(model, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "llmc.cli", "build", str(model), "-o", str(tmp_path / "x.llmc"),
                           "--target", "sm90", *OPTIONS, "--op-priority", "rms_norm=triton_missing"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "rms_norm" in proc.stderr and not (tmp_path / "x.llmc").exists()
    proc = subprocess.run([sys.executable, "-m", "llmc.cli", "build", str(model), "-o", str(tmp_path / "y.llmc"),
                           "--target", "sm90", *OPTIONS, "--op-priority", "norm_linear=native"],
                          capture_output=True, text=True)  # the cuda runtime runs kernel launches only
    assert proc.returncode == 2 and "runs kernels only" in proc.stderr and not (tmp_path / "y.llmc").exists()
