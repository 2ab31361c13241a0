"""`llmc build --tensor-parallel-size N`: the bundle layout, the manifest, and every rank's weights equal to the
sharding rules applied to the single-rank bundle's, for every family; bad N is one line and nothing written."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import safetensors.torch
from click.testing import CliRunner

from checkpoints import FAMILIES
from llmc.aot.spec import ModelSpec
from llmc.aot.tensor_parallel import VOCAB_START, rank_spec, shard
from llmc.artifacts import Bundle
from llmc.cli.main import main
from tp_checkpoints import build_tp, make_tp_checkpoint

FAMILY_NAMES = sorted(FAMILIES)


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """family -> (checkpoint, TP=1 bundle), built once per family."""
    root, made = tmp_path_factory.mktemp("tp_build"), {}

    def get(family):
        if family not in made:
            model = make_tp_checkpoint(family, root / family / "hf")
            build_tp(model, root / family / "tp1", 1)
            made[family] = model, root / family / "tp1"
        return made[family]
    return get


def _weights(path):
    return safetensors.torch.load_file(str(path))


def _spec(manifest: dict) -> ModelSpec:
    fields = {k: v for k, v in manifest["model"].items() if k in ModelSpec.__dataclass_fields__}
    for key in ("sliding_windows", "eos_token_ids", "moe_layers"):
        fields[key] = tuple(fields[key])
    return ModelSpec(**fields)


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_rank_holds_its_shard_of_the_single_rank_weights(single, tmp_path, family, size):
    model, tp1 = single(family)
    manifest = build_tp(model, tmp_path / "tp", size)
    whole = json.loads((tp1 / "manifest.json").read_text())
    assert manifest["parallel"] == {"tensor_parallel_size": size}
    assert manifest["build"]["tensor_parallel_size"] == size and manifest["model"] == whole["model"]
    weights = sorted(f for f in manifest["files"] if f.startswith("weights/"))
    assert weights == [f"weights/rank{r}/model.safetensors" for r in range(size)]
    assert {f for f in manifest["files"] if not f.startswith("weights/")} == {f for f in whole["files"] if not f.startswith("weights/")}
    spec = _spec(whole)
    assert manifest["kv_cache"] == {**whole["kv_cache"], "num_kv_heads": rank_spec(spec, size).num_kv_heads}
    reference = _weights(tp1 / "weights/model.safetensors")
    for rank in range(size):
        got = _weights(tmp_path / "tp" / f"weights/rank{rank}/model.safetensors")
        assert got.pop(VOCAB_START).tolist() == [rank * spec.vocab_size // size]
        assert set(got) == set(reference)
        for name, tensor in reference.items():
            assert got[name].equal(shard(name, tensor, spec, rank, size)), f"{name} of rank {rank}"
    with Bundle.open(tmp_path / "tp") as bundle:
        bundle.validate()
        steps = [s for s in bundle.plan("decode_b1")["steps"]]
    ops = [s["op"] for s in steps]
    assert ops.count("all_gather") == 1 and ops[0] == "vocab_parallel_embedding"
    assert ops.count("all_reduce") >= 1 + 2 * spec.num_layers - _fused_reductions(steps)


def _fused_reductions(steps) -> int:
    return sum(s["op"] == "all_reduce_add_rms_norm" for s in steps)


def test_a_single_rank_build_is_unchanged_by_the_option(single, tmp_path):
    model, tp1 = single("llama")
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(tmp_path / "b"), "--max-seq-len", "64",
                                       "--max-batch-size", "2", "--max-num-batched-tokens", "16", "--no-cache",
                                       "--tensor-parallel-size", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "b/manifest.json").read_bytes() == (tp1 / "manifest.json").read_bytes()


@pytest.mark.parametrize("vocab, heads_size, field", [(211, 2, "vocab_size 211"), (212, 3, "num_attention_heads 4")])
def test_a_size_that_does_not_divide_is_one_line_naming_the_field(tmp_path, vocab, heads_size, field):
    model = make_tp_checkpoint("llama", tmp_path / "hf", vocab_size=vocab)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(out), "--max-seq-len", "64",
                                       "--tensor-parallel-size", str(heads_size)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config.json: ") and field in lines[0], result.output
    assert f"--tensor-parallel-size {heads_size}" in lines[0]
    assert not out.exists() and not list(tmp_path.glob("bundle.tmp-*"))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_writing_the_ranks_reads_each_checkpoint_tensor_once(tmp_path, monkeypatch, family):
    # the ranks' files are written side by side and the shards of one weight share its load: not one read per rank
    from safetensors import safe_open

    from llmc.aot.build import build
    from llmc.aot.bundle_write import contents, write_bundle
    from llmc.aot.config import BuildConfig
    from llmc.aot.weights import Source
    from tp_checkpoints import BUILD

    model = make_tp_checkpoint(family, tmp_path / "hf")
    compiled = build(model, tmp_path / "unused", BuildConfig(tensor_parallel_size=4, **BUILD), stop_after="compile")
    c = contents(compiled)  # the self-test runs the whole model, loading its weights: not the writer's reads
    reads, read_into = Counter(), Source.read_into
    monkeypatch.setattr(Source, "read_into", lambda s, out: (reads.update([s.name]), read_into(s, out))[1])
    write_bundle(tmp_path / "tp", c)
    with safe_open(str(model / "model.safetensors"), "pt") as f:
        assert reads == Counter(f.keys())
