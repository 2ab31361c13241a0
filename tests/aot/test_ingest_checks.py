"""Ingest's checks on bad checkpoints, through the CLI: one line naming file and tensor, exit 2, nothing written."""

import json
import shutil
import struct

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from checkpoints import make_checkpoint
from llmc.cli.main import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_checkpoint("llama", tmp_path_factory.mktemp("checks") / "hf", dtype=torch.bfloat16)


def _copy(good, tmp_path, edit):
    model = tmp_path / "model"
    shutil.copytree(good, model)
    edit(model)
    return model


def _refused(model, tmp_path, *words):
    out = tmp_path / "out" / "bundle"
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(out), "--max-seq-len", "32", "--no-cache"],
                                catch_exceptions=False, env={"LLMC_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written, no staging left
    return lines[0]


def _edit_tensors(model, change):
    tensors = load_file(model / "model.safetensors")
    change(tensors)
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})


def _edit_config(model, **fields):
    config = json.loads((model / "config.json").read_text())
    config.update(fields)
    (model / "config.json").write_text(json.dumps(config))


def test_more_layers_in_the_checkpoint_than_the_config(good, tmp_path):
    model = _copy(good, tmp_path, lambda m: _edit_config(m, num_hidden_layers=1))
    _refused(model, tmp_path, "model.safetensors", "model.layers.1.")


def test_tensor_no_family_uses(good, tmp_path):
    model = _copy(good, tmp_path, lambda m: _edit_tensors(m, lambda t: t.update(extra=torch.zeros(3))))
    _refused(model, tmp_path, "model.safetensors", "'extra'")


def test_same_tensor_in_two_shards(good, tmp_path):
    def split(model):
        tensors = load_file(model / "model.safetensors")
        names = sorted(tensors)
        first = {n: tensors[n] for n in names[: len(names) // 2]}
        second = {n: tensors[n] for n in names[len(names) // 2:]}
        second[names[0]] = tensors[names[0]]  # also in the first shard
        (model / "model.safetensors").unlink()
        save_file(first, model / "model-00001-of-00002.safetensors")
        save_file(second, model / "model-00002-of-00002.safetensors")
        weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
        weight_map.update({n: "model-00002-of-00002.safetensors" for n in second if n not in first})
        (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    model = _copy(good, tmp_path, split)
    _refused(model, tmp_path, "model-0000", "is also in")


@pytest.mark.parametrize("method", ["gptq", "awq", "bitsandbytes", None])
def test_quantization_this_llmc_cannot_read(good, tmp_path, method):
    model = _copy(good, tmp_path, lambda m: _edit_config(m, quantization_config={"quant_method": method, "bits": 4}))
    _refused(model, tmp_path, "config.json", "quantization_config", repr(method))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_values_in_the_tensors_own_dtype(good, tmp_path, value):
    def poison(tensors):
        t = tensors["model.layers.1.mlp.down_proj.weight"]
        t.view(-1)[t.numel() - 1] = value  # the very last element, in bf16

    model = _copy(good, tmp_path, lambda m: _edit_tensors(m, poison))
    _refused(model, tmp_path, "model.safetensors", "model.layers.1.mlp.down_proj.weight", "NaN or infinite")


def test_truncated_shard(good, tmp_path):
    def truncate(model):
        path = model / "model.safetensors"
        data = path.read_bytes()
        (n,) = struct.unpack("<Q", data[:8])
        path.write_bytes(data[: 8 + n + 10])

    _refused(_copy(good, tmp_path, truncate), tmp_path, "model.safetensors")


def test_nonfinite_scan_covers_every_float_dtype():
    from llmc.aot.checkpoint import NONFINITE_MASKS, _any_nonfinite

    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.float8_e5m2, torch.float8_e4m3fn):
        name = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64",
                torch.float8_e5m2: "F8_E5M2", torch.float8_e4m3fn: "F8_E4M3"}[dtype]
        finite = torch.tensor([0.0, -1.5, 3.0, 1e-3], dtype=torch.float32).to(dtype)
        buf = bytearray(finite.view(torch.uint8).numpy().tobytes())
        assert not _any_nonfinite(buf, len(buf), *NONFINITE_MASKS[name]), name
        for bad in (float("nan"),) + (() if dtype == torch.float8_e4m3fn else (float("inf"),)):
            poisoned = finite.clone()
            poisoned[2] = bad
            buf = bytearray(poisoned.view(torch.uint8).numpy().tobytes())
            assert _any_nonfinite(buf, len(buf), *NONFINITE_MASKS[name]), (name, bad)
