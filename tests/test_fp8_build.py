"""`llmc build` of FP8: the round trip of --quantize fp8, the manifest and inspect, and bad input.

Bad input fails in one line with exit code 2 and writes nothing: scales missing, misshapen, zero,
negative or NaN; blocks that do not divide as declared; quantization configs llmc cannot read.
"""

import json
import shutil

import pytest
import safetensors.torch
import torch
from click.testing import CliRunner

from fp8_checkpoints import make_fp8_checkpoint, quantize_rows
from llmc.aot.quantize import Scheme, check_target
from llmc.aot.target import Target
from llmc.cli.main import main
from llmc.errors import UserError

OPTIONS = ["--max-seq-len", "32", "--max-batch-size", "2", "--max-num-batched-tokens", "16"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("fp8-build")
    src, block, _ = make_fp8_checkpoint("llama", root, "block", 32)
    return src, block


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_quantize_round_trip_is_byte_exact(checkpoints, tmp_path):
    src, _ = checkpoints
    result = _cli("build", src, "-o", tmp_path / "q.llmc", "--quantize", "fp8", *OPTIONS)
    assert result.exit_code == 0, result.output
    got = safetensors.torch.load_file(str(tmp_path / "q.llmc" / "weights" / "model.safetensors"))
    hf = safetensors.torch.load_file(str(src / "model.safetensors"))
    merged = {"qkv_proj": ("self_attn", "q_proj", "k_proj", "v_proj"), "o_proj": ("self_attn", "o_proj"),
              "gate_up_proj": ("mlp", "gate_proj", "up_proj"), "down_proj": ("mlp", "down_proj")}
    for layer in range(2):
        for ir, (module, *parts) in merged.items():
            q, s = zip(*(quantize_rows(hf[f"model.layers.{layer}.{module}.{p}.weight"]) for p in parts))
            weight, scale = got[f"layers.{layer}.{ir}.weight"], got[f"layers.{layer}.{ir}.weight_scale"]
            assert weight.dtype == torch.float8_e4m3fn and scale.dtype == torch.float32
            assert torch.equal(weight.view(torch.uint8), torch.cat(q).view(torch.uint8)), f"layers.{layer}.{ir}.weight"
            assert torch.equal(scale.view(torch.int32), torch.cat(s).view(torch.int32)), f"layers.{layer}.{ir}.weight_scale"
    fp8 = {name for name, t in got.items() if t.dtype == torch.float8_e4m3fn}
    assert all(".layers." in f".{n}" and n.endswith("_proj.weight") for n in fp8), fp8
    assert got["embed_tokens.weight"].dtype == torch.bfloat16 and got["norm.weight"].dtype == torch.bfloat16
    manifest = json.loads((tmp_path / "q.llmc" / "manifest.json").read_text())
    assert manifest["quantization"] == {"weights": "fp8_e4m3", "granularity": "channel", "activations": "dynamic_per_token"}
    shown = _cli("inspect", tmp_path / "q.llmc")
    assert "fp8_e4m3 weights (channel scales), activations dynamic_per_token" in shown.output, shown.output
    assert "fp8_norm_linear" in shown.output and "fp8_silu_mul_linear" in shown.output


def test_block_checkpoint_manifest(checkpoints, tmp_path):
    _, block = checkpoints
    assert _cli("build", block, "-o", tmp_path / "b.llmc", *OPTIONS).exit_code == 0
    manifest = json.loads((tmp_path / "b.llmc" / "manifest.json").read_text())
    assert manifest["quantization"] == {"weights": "fp8_e4m3", "granularity": "block32", "activations": "dynamic_per_group"}


def _edit_tensors(model, edit):
    path = model / "model.safetensors"
    tensors = safetensors.torch.load_file(str(path))
    edit(tensors)
    safetensors.torch.save_file(tensors, str(path))


def _edit_config(model, edit):
    config = json.loads((model / "config.json").read_text())
    edit(config["quantization_config"])
    (model / "config.json").write_text(json.dumps(config))


SCALE = "model.layers.1.mlp.down_proj.weight_scale_inv"
BAD = {
    "missing scale": (lambda t: t.pop(SCALE), None, ["has no scale tensor", SCALE]),
    "misshapen scale": (lambda t: t.__setitem__(SCALE, t[SCALE][:, :1].contiguous()), None, ["has shape", SCALE]),
    "zero scale": (lambda t: t[SCALE].__setitem__((0, 0), 0.0), None, ["positive", SCALE]),
    "negative scale": (lambda t: t[SCALE].__setitem__((0, 1), -1.0), None, ["positive", SCALE]),
    "nan scale": (lambda t: t[SCALE].__setitem__((0, 0), float("nan")), None, ["NaN", SCALE]),
    "blocks do not divide as declared": (None, lambda q: q.__setitem__("weight_block_size", [64, 64]), ["has shape"]),
    "non-square blocks": (None, lambda q: q.__setitem__("weight_block_size", [32, 64]), ["weight_block_size"]),
    "static activations": (None, lambda q: q.__setitem__("activation_scheme", "static"), ["'fp8'", "static"]),
    "awq": (None, lambda q: q.update(quant_method="awq"), ["'awq'", "compressed-tensors"]),
    "gptq": (None, lambda q: q.update(quant_method="gptq"), ["'gptq'"]),
    "fp8 kv cache": (None, lambda q: q.__setitem__("kv_cache_scheme", {"num_bits": 8}), ["KV cache"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_fp8_input_is_one_line(checkpoints, tmp_path, case):
    tensors, config, words = BAD[case]
    model = tmp_path / "model"
    shutil.copytree(checkpoints[1], model)
    if tensors:
        _edit_tensors(model, tensors)
    if config:
        _edit_config(model, config)
    result = _cli("build", model, "-o", tmp_path / "x.llmc", *OPTIONS)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "x.llmc").exists()


@pytest.mark.parametrize("layout_edit,words", [
    (lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=4, type="int"), ["compressed-tensors", "num_bits 8"]),
    (lambda q: q["config_groups"]["group_0"].update(input_activations={"num_bits": 8, "type": "float", "dynamic": False,
                                                                       "strategy": "tensor"}), ["static"]),
    (lambda q: q.update(format="nvfp4-pack-quantized"), ["nvfp4"]),
])
def test_compressed_tensors_refusals(tmp_path, layout_edit, words):
    _, model, _ = make_fp8_checkpoint("qwen3", tmp_path, "channel")
    _edit_config(model, layout_edit)
    result = _cli("build", model, "-o", tmp_path / "x.llmc", *OPTIONS)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "x.llmc").exists()


def test_quantize_refused_where_it_cannot_run(checkpoints, tmp_path):
    _, block = checkpoints
    result = _cli("build", block, "-o", tmp_path / "x.llmc", "--quantize", "fp8", *OPTIONS)
    assert result.exit_code == 2 and "already quantized" in result.output and not (tmp_path / "x.llmc").exists()
    no_fp8 = Target("old", "cuda", 70, 32, frozenset({"bf16"}), "a GPU with neither FP8 nor mma")
    with pytest.raises(UserError, match="neither FP8 tensor cores nor a weight-only"):
        check_target(no_fp8)
    assert Scheme("block128").group_size == 128 and Scheme("tensor").activations == "dynamic_per_token"
