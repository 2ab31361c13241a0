"""Family descriptions read from config.json: which layers are sparse, slide, and with what rope base."""

import json
import shutil

import pytest

from checkpoints import make_checkpoint
from llmc.aot.families import FAMILIES
from llmc.aot.families.weights import weight_map
from llmc.aot.ingest import read_spec


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {name: make_checkpoint(name, root / name) for name in ("qwen3_moe", "gemma3", "gemma2")}


def _spec(model, tmp_path, drop=(), **fields):
    edited = tmp_path / "edited"
    shutil.copytree(model, edited)
    config = json.loads((edited / "config.json").read_text())
    for key in drop:
        config.pop(key, None)
    config.update(fields)
    (edited / "config.json").write_text(json.dumps(config))
    return read_spec(edited)


def test_dense_layers_among_moe_ones(models, tmp_path):
    assert read_spec(models["qwen3_moe"]).moe_layers == (True, False)  # mlp_only_layers=[1]
    spec = _spec(models["qwen3_moe"], tmp_path, num_hidden_layers=4, mlp_only_layers=[], decoder_sparse_step=2)
    assert spec.moe_layers == (False, True, False, True)
    assert not spec.norm_topk_prob and spec.num_experts == 8 and spec.num_experts_per_tok == 2


def test_hub_spelling_of_expert_count(models, tmp_path):
    spec = _spec(models["qwen3_moe"], tmp_path, drop=["num_local_experts"], num_experts=8, norm_topk_prob=True)
    assert spec.num_experts == 8 and spec.norm_topk_prob


def test_gemma3_rope_per_layer_type(models, tmp_path):
    spec = read_spec(models["gemma3"])
    assert spec.sliding_windows == (6, 0) and spec.rope_theta == 1e6 and spec.local_rope["rope_theta"] == 1e4
    old = _spec(models["gemma3"], tmp_path, drop=["rope_parameters", "layer_types"], num_hidden_layers=6, rope_theta=1e6,
                rope_local_base_freq=1e4, rope_scaling={"rope_type": "linear", "factor": 8.0})
    assert old.sliding_windows == (6, 6, 6, 6, 6, 0)  # sliding_window_pattern 6: every sixth layer is full
    assert old.rope_scaling["factor"] == 8.0 and old.local_rope == {"rope_type": "default", "rope_theta": 1e4}


def test_gemma_features(models, tmp_path):
    g2, g3 = read_spec(models["gemma2"]), read_spec(models["gemma3"])
    assert (g2.attn_soft_cap, g2.final_soft_cap, g2.attention_scale) == (1.0, 3.0, 0.25)
    assert (g3.attn_soft_cap, g3.final_soft_cap) == (0.0, 0.0) and g3.attention_scale == pytest.approx(24 ** -0.5)
    assert g2.embed_scale == 8.0 and g2.sandwich_norms and g2.activation == "gelu_tanh"
    hub = _spec(models["gemma2"], tmp_path, drop=["layer_types"], num_hidden_layers=4)
    assert hub.sliding_windows == (6, 0, 6, 0)


def test_weight_map_folds_gemma_norms_only(models):
    spec = read_spec(models["gemma3"])
    transforms = {s.ir: s.transform for s in weight_map(FAMILIES[spec.architecture], spec, set())}
    assert transforms["layers.0.q_norm.weight"] == transforms["norm.weight"] == "plus_one"
    assert transforms["layers.0.q_proj.weight"] == "copy"
    moe = read_spec(models["qwen3_moe"])
    stacked = {s.ir: s for s in weight_map(FAMILIES[moe.architecture], moe, set())}
    assert stacked["layers.0.experts.gate_up_proj"].transform == "stack_gate_up"
    assert len(stacked["layers.0.experts.gate_up_proj"].hf) == 16 and "layers.1.gate_proj.weight" in stacked


def test_stacked_experts_read_as_per_expert_ones(models, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from llmc.aot.ingest import read_weights
    from llmc.aot.weights import load

    stacked = tmp_path / "stacked"
    shutil.copytree(models["qwen3_moe"], stacked)
    tensors = load_file(stacked / "model.safetensors")
    expert = "model.layers.0.mlp.experts.{}.{}_proj.weight"
    gate_up = [torch.cat([tensors.pop(expert.format(e, "gate")), tensors.pop(expert.format(e, "up"))]) for e in range(8)]
    tensors["model.layers.0.mlp.experts.gate_up_proj"] = torch.stack(gate_up)
    tensors["model.layers.0.mlp.experts.down_proj"] = torch.stack([tensors.pop(expert.format(e, "down")) for e in range(8)])
    save_file(tensors, stacked / "model.safetensors", metadata={"format": "pt"})
    spec = read_spec(stacked)
    one, other = read_weights(models["qwen3_moe"], spec, torch.float32), read_weights(stacked, spec, torch.float32)
    assert one.keys() == other.keys() and all(torch.equal(load(one[k]), load(other[k])) for k in one)
