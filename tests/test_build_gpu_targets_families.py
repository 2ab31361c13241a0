"""Each newer family builds for every GPU target with no GPU, every node on a compiled kernel,
reproducibly, and `llmc inspect` names the impl that serves each of its new ops."""

import hashlib
import json

import pytest

from checkpoints import make_checkpoint
from clean_build import finish, llmc

OPTIONS = ["--dtype", "bfloat16", "--max-seq-len", "32", "--max-batch-size", "2", "--max-num-batched-tokens", "16"]
TARGETS = ("sm90", "gfx942")  # every family; the two with the most new ops build for sm80 and sm89 too
ALL_TARGETS = ("sm80", "sm89", "sm90", "gfx942")
NEW_OPS = {  # family -> ops only it brings
    "qwen3_moe": ("moe_route", "fused_moe"),
    "mixtral": ("moe_route", "fused_moe"),
    "gemma2": ("softcap_paged_attention", "soft_cap", "scale", "gelu_tanh_mul_linear"),
    "gemma3": ("scale", "gelu_tanh_mul_linear"),
    "phi3": ("paged_attention",),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel-cache")


def _digests(bundle):
    return {str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(bundle.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("family", sorted(NEW_OPS))
def test_family_builds_for_every_gpu_target(family, cache, tmp_path):
    model = make_checkpoint(family, tmp_path / "hf")
    builds = {t: llmc("build", model, "-o", tmp_path / f"{t}.llmc", "--target", t, *OPTIONS, wait=False, LLMC_CACHE_DIR=cache)
              for t in (ALL_TARGETS if family in ("qwen3_moe", "gemma2") else TARGETS)}
    for target, proc in builds.items():
        finish(proc)
        bundle = tmp_path / f"{target}.llmc"
        lock = json.loads((bundle / "impls.lock.json").read_text())["nodes"]
        assert not [k for k, v in lock.items() if v["provider"] == "native"], f"{family} {target}: nodes left on native"
        shown = llmc("inspect", bundle)
        for op in NEW_OPS[family]:
            assert f"  {op}: triton" in shown, f"{family} {target}: inspect shows no kernel for {op}\n{shown}"
    again = tmp_path / "again.llmc"
    llmc("build", model, "-o", again, "--target", "sm90", *OPTIONS, "--no-cache", LLMC_CACHE_DIR=cache)  # stages rerun
    assert _digests(again) == _digests(tmp_path / "sm90.llmc"), f"{family}: a rebuild is not bit-identical"
