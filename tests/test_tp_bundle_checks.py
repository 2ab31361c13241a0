"""Tensor-parallel bundles for GPU targets plan their collectives as NCCL steps; `llmc verify` checks every
rank's weights (a missing rank file, or one from another build, is named)."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from llmc.artifacts import Bundle
from llmc.cli.main import main
from tp_checkpoints import build_tp, make_tp_checkpoint

COLLECTIVE_OPS = {"all_reduce", "all_gather", "all_reduce_add_rms_norm"}


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp_checks")
    for seed in (0, 1):
        build_tp(make_tp_checkpoint("qwen3_moe", root / f"hf{seed}", seed=seed), root / f"tp{seed}", 2)
    return root


def test_an_sm90_bundle_plans_each_collective_as_one_nccl_call(tmp_path):
    build_tp(make_tp_checkpoint("qwen3_moe", tmp_path / "hf"), tmp_path / "tp", 2, target="sm90")
    with Bundle.open(tmp_path / "tp") as bundle:
        bundle.validate()
        lock = bundle.lock()["nodes"]
        for name in bundle.plans():
            steps = bundle.plan(name)["steps"]
            collective = [s for s in steps if s["op"] in COLLECTIVE_OPS]
            assert {s["op"] for s in collective} == COLLECTIVE_OPS, name
            for step in collective:
                assert step["provider"] == "nccl" and lock[f"{name}/{step['node']}"]["provider"] == "nccl"
                call = step["collective"]
                assert call["op"] == ("all_gather" if step["op"] == "all_gather" else "all_reduce")
                assert call["send"] == step["args"][0]
                kernels = len(step["launches"])
                assert kernels == (0 if step["op"] == "all_reduce" else 1), step["node"]
            assert not [s for s in steps if "collective" in s and s["op"] not in COLLECTIVE_OPS]


def _verify(path):
    return CliRunner().invoke(main, ["verify", str(path)], catch_exceptions=False)


def test_verify_checks_every_rank(bundles):
    result = _verify(bundles / "tp0")
    assert result.exit_code == 0, result.output


def test_a_missing_rank_file_is_named(bundles, tmp_path):
    copy = shutil.copytree(bundles / "tp0", tmp_path / "b")
    (copy / "weights/rank1/model.safetensors").unlink()
    result = _verify(copy)
    assert result.exit_code == 1
    assert "weights/rank1/model.safetensors: listed in the manifest but missing" in result.output


def test_a_rank_file_from_another_build_is_named(bundles, tmp_path):
    copy = shutil.copytree(bundles / "tp0", tmp_path / "b")
    shutil.copyfile(bundles / "tp1/weights/rank1/model.safetensors", copy / "weights/rank1/model.safetensors")
    result = _verify(copy)
    assert result.exit_code == 1
    mismatches = [line for line in result.output.splitlines() if line.startswith("  ")]
    assert mismatches == ["  weights/rank1/model.safetensors: sha256 does not match the manifest; the bundle was "
                          "modified or corrupted: rebuild it or copy it again"]


def test_a_manifest_without_a_rank_is_refused_at_load(bundles, tmp_path):
    import json

    from llmc.artifacts.canonical import dumps
    from llmc.artifacts.manifest import root_digest
    from llmc.errors import BundleError

    copy = shutil.copytree(bundles / "tp0", tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["weights/rank1/model.safetensors"]
    (copy / "weights/rank1/model.safetensors").unlink()
    manifest["root_digest"] = root_digest(manifest)
    (copy / "manifest.json").write_bytes(dumps(manifest))
    with pytest.raises(BundleError, match="'files' lists no weights/rank1/\\*.safetensors for rank 1 of 2"):
        with Bundle.open(copy) as bundle:
            bundle.validate()
