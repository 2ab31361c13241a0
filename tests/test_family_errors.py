"""Checkpoints that disagree with their family's description: one line naming file and field, exit 2, nothing written."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from checkpoints import make_checkpoint
from llmc.cli.main import main

EXPERT = "model.layers.0.mlp.experts.{}.{}_proj.weight"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-errors")
    return {name: make_checkpoint(name, root / name) for name in ("qwen3_moe", "gemma3", "phi3")}


def _tensors(edit):
    def apply(model):
        path = model / "model.safetensors"
        tensors = load_file(path)
        edit(tensors)
        save_file(tensors, path, metadata={"format": "pt"})
    return apply


def _config(**fields):
    def apply(model):
        config = json.loads((model / "config.json").read_text())
        config.update(fields)
        (model / "config.json").write_text(json.dumps(config))
    return apply


CASES = {
    "missing expert": ("qwen3_moe", _tensors(lambda t: t.pop(EXPERT.format(3, "up"))),
                       ("model.layers.0.mlp.experts.3.up_proj.weight", "missing")),
    "extra expert": ("qwen3_moe", _tensors(lambda t: t.update({EXPERT.format(8, "gate"): torch.zeros(32, 64)})),
                     ("model.safetensors", "experts.8.gate_proj", "num_experts is 8")),
    "misshapen expert": ("qwen3_moe", _tensors(lambda t: t.update({EXPERT.format(2, "down"): torch.zeros(64, 30)})),
                         ("model.safetensors", "experts.2.down_proj", "shape")),
    "expert count": ("qwen3_moe", _config(num_local_experts=6), ("model.safetensors", "experts.6", "num_experts is 6")),
    "expert activation": ("qwen3_moe", _config(hidden_act="gelu"), ("config.json", "hidden_act", "gelu")),
    "top-k above experts": ("qwen3_moe", _config(num_experts_per_tok=9), ("config.json", "num_experts_per_tok")),
    "layer_types length": ("gemma3", _config(layer_types=["sliding_attention"] * 3), ("config.json", "layer_types", "3")),
    "layer_types entry": ("gemma3", _config(layer_types=["sliding_attention", "chunked_attention"]),
                          ("config.json", "layer_types", "chunked_attention")),
    "unknown activation": ("gemma3", _config(hidden_activation="relu_squared"),
                           ("config.json", "hidden_activation", "relu_squared")),
    "odd rotary width": ("phi3", _config(partial_rotary_factor=0.3125, rope_parameters={"rope_type": "default",
                                         "rope_theta": 10000.0, "partial_rotary_factor": 0.3125}),
                         ("config.json", "partial_rotary_factor")),
    "longrope factors": ("phi3", _config(original_max_position_embeddings=128, rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75, "short_factor": [1.0] * 5,
        "long_factor": [1.0] * 6}), ("config.json", "short_factor", "6")),
    "longrope past its short context": ("phi3", _config(original_max_position_embeddings=128, rope_parameters={
        "rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75, "short_factor": [1.0] * 6,
        "long_factor": [1.0] * 6}), ("--max-seq-len", "original_max_position_embeddings 128")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_family_checkpoint(models, tmp_path, case):
    family, edit, words = CASES[case]
    model = tmp_path / "model"
    shutil.copytree(models[family], model)
    edit(model)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(out)], catch_exceptions=False)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert not out.exists(), "a failed build must write nothing"
