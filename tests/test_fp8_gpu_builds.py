"""FP8 bundles for GPU targets, built on a machine with no GPU, in clean child processes.

sm89 and sm90 serve every FP8 linear with the FP8 tensor-core kernels, sm80 with the weight-only
ones (gfx942 takes the same path); a second build with an empty kernel cache gives the same bytes.
"""

import json

import pytest

from clean_build import llmc
from fp8_checkpoints import make_fp8_checkpoint

OPTIONS = ["--dtype", "bfloat16", "--max-seq-len", "64", "--max-batch-size", "4", "--max-num-batched-tokens", "32"]
FP8_OPS = ("fp8_linear", "fp8_norm_linear", "fp8_silu_mul_linear")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8-gpu")
    src, block, _ = make_fp8_checkpoint("qwen3", root, "block", 32)
    return {"block": block, "bf16": src}


def _providers(bundle) -> dict[str, set]:
    lock = json.loads((bundle / "impls.lock.json").read_text())["nodes"]
    assert not [k for k, v in lock.items() if v["provider"] == "native"], "nodes left on native"
    found: dict[str, set] = {}
    for entry in lock.values():
        found.setdefault(entry["op"], set()).add(entry["provider"])
    return found


@pytest.mark.parametrize("target,model,extra,kind", [
    ("sm90", "block", [], "fp8"), ("sm89", "bf16", ["--quantize", "fp8"], "fp8"),
    ("sm80", "block", [], "w8"),
])
def test_fp8_bundle_builds_for_gpu_targets(models, tmp_path, target, model, extra, kind):
    bundle = tmp_path / "a.llmc"
    llmc("build", models[model], "-o", bundle, "--target", target, *OPTIONS, *extra, LLMC_CACHE_DIR=tmp_path / "cache")
    providers = _providers(bundle)
    for op in FP8_OPS:
        assert providers.get(op) and all(p.startswith(f"triton_{kind}_") for p in providers[op]), (op, providers.get(op))
    assert "linear" not in providers  # every decoder linear is FP8; the LM head stays 16-bit
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["quantization"]["weights"] == "fp8_e4m3"
    if target == "sm90":
        again = tmp_path / "b.llmc"
        llmc("build", models[model], "-o", again, "--target", target, *OPTIONS, "--no-cache",
             LLMC_CACHE_DIR=tmp_path / "cache2")
        second = json.loads((again / "manifest.json").read_text())
        assert second["files"] == manifest["files"], [f for f in manifest["files"] if manifest["files"][f] != second["files"].get(f)]
        assert second["root_digest"] == manifest["root_digest"]
