"""The build as stages: `stop_after` returns each stage's value (dumpable), and nothing is written before `write`."""

import json

import pytest
import torch

from checkpoints import make_checkpoint
from llmc.aot import stages
from llmc.aot.build import STAGES, build
from llmc.aot.config import BuildConfig
from llmc.errors import UserError

VALUES = {"ingest": stages.Ingested, "trace": stages.Traced, "fuse": stages.Fused, "lower": stages.Lowered,
          "plan": stages.Planned, "compile": stages.Compiled, "write": dict}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_checkpoint("qwen3", tmp_path_factory.mktemp("stages") / "hf", dtype=torch.bfloat16)


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("target", ["cpu", "sm90"])
def test_stop_after_returns_the_stage_value(model, tmp_path, stage, target):
    config = BuildConfig(target=target, max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16)
    out = tmp_path / "bundle"
    value = build(model, out, config, stop_after=stage)
    assert isinstance(value, VALUES[stage])
    json.dumps(stages.dump(value))  # every value dumps to JSON
    assert out.exists() == (stage == "write")
    assert not list(tmp_path.glob("bundle.tmp-*"))


def test_stage_values_are_not_edited_by_later_stages(model, tmp_path):
    config = BuildConfig(target="sm90", max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16)
    planned = build(model, tmp_path / "b", config, stop_after="plan")
    launches = [launch for plan in planned.plans.values() for step in plan["steps"] for launch in step.get("launches", ())]
    assert launches and all(isinstance(launch["kernel"], int) for launch in launches)  # spec indices until compile
    lowered = planned.lowered
    assert set(lowered.choices) == set(planned.plans)
    assert planned.lowered.fused.ingested.target.launch_context().num_sms == 132
    traced_weights = set(lowered.fused.ingested.weights)
    assert "layers.0.qkv_proj.weight" in lowered.fused.weights and "layers.0.qkv_proj.weight" not in traced_weights


def test_plans_follow_the_target_launch_context(model, tmp_path):
    from llmc.aot.launch_context import current_launch_context
    from llmc.aot.target import TARGETS

    seen = {}
    import llmc.kernels.linear as linear

    original = linear._gemv

    def spy(*args, **kwargs):
        seen.setdefault(current_launch_context().target, current_launch_context().num_sms)
        return original(*args, **kwargs)

    linear._gemv = spy
    try:
        for target in ("sm80", "sm89", "gfx942"):
            build(model, tmp_path / target, BuildConfig(target=target, max_seq_len=64, max_batch_size=2,
                                                        max_num_batched_tokens=16), stop_after="plan")
    finally:
        linear._gemv = original
    assert seen == {name: TARGETS[name].num_sms for name in ("sm80", "sm89", "gfx942")} == {"sm80": 108, "sm89": 142, "gfx942": 304}


def test_unknown_stage(model, tmp_path):
    with pytest.raises(UserError, match="not a stage"):
        build(model, tmp_path / "b", BuildConfig(), stop_after="link")
