"""Bad input through the CLI: one line naming the file or field, exit code 2, no traceback, nothing written."""

import json
import shutil
import struct
import subprocess
import sys

import pytest
from click.testing import CliRunner

from checkpoints import make_checkpoint
from llmc.cli.main import main


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = make_checkpoint("llama", root / "hf")
    bundle = root / "bundle"
    result = CliRunner().invoke(main, ["build", str(model), "-o", str(bundle), "--max-seq-len", "32"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return model, bundle


def _fails(args, *words):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _broken_copy(good_model, tmp_path, edit):
    model = tmp_path / "model"
    shutil.copytree(good_model, model)
    edit(model)
    return model


def _set_config(**fields):
    def edit(model):
        config = json.loads((model / "config.json").read_text())
        config.update(fields)
        for key, value in fields.items():
            if value is None:
                del config[key]
        (model / "config.json").write_text(json.dumps(config))
    return edit


def _truncate(model):
    path = model / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])


def _shape_mismatch(model):
    config = json.loads((model / "config.json").read_text())
    config["intermediate_size"] += 8
    (model / "config.json").write_text(json.dumps(config))


def _missing_shard(model):
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors",
                                             "lm_head.weight": "model-00002-of-00002.safetensors"}}
    (model / "model.safetensors.index.json").write_text(json.dumps(index))


def _huge_header(model):
    path = model / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 200 * 1024 * 1024) + data[8:])


CASES = {
    "unknown architecture": (_set_config(architectures=["GPT2LMHeadModel"]), ("config.json", "GPT2LMHeadModel")),
    "remote code": (_set_config(architectures=["MyModel"], auto_map={"AutoModelForCausalLM": "m.MyModel"}), ("trust_remote_code",)),
    "missing field": (_set_config(hidden_size=None), ("config.json", "hidden_size")),
    "invalid json": (lambda m: (m / "config.json").write_text("{not json"), ("config.json", "invalid JSON")),
    "missing config": (lambda m: (m / "config.json").unlink(), ("config.json",)),
    "truncated weights": (_truncate, ("model.safetensors",)),
    "header too large": (_huge_header, ("model.safetensors",)),
    "shape mismatch": (_shape_mismatch, ("model.safetensors", "shape")),
    "missing shard": (_missing_shard, ("model-00002-of-00002.safetensors",)),
    "no weights": (lambda m: (m / "model.safetensors").unlink(), ("model.safetensors",)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint(good, tmp_path, case):
    edit, words = CASES[case]
    model = _broken_copy(good[0], tmp_path, edit)
    out = tmp_path / "out"
    _fails(["build", str(model), "-o", str(out)], *words)
    assert not out.exists(), "a failed build must write nothing"


def test_output_path_that_is_not_a_bundle(good, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "precious")], "not an llmc bundle")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


def test_bad_build_options(good, tmp_path):
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--target", "sm70"], "--target", "sm70")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--kv-block-size", "3"], "--kv-block-size")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--op-priority", "linear=magic"], "linear", "magic")


def test_prompt_too_long(good):
    _fails(["run", str(good[1]), "--prompt", "x " * 40], "prompt has", "--max-seq-len")


@pytest.mark.parametrize("option,value,field", [
    ("--temperature", "-1", "temperature"), ("--top-p", "0", "top_p"), ("--top-p", "1.5", "top_p"),
    ("--top-k", "-5", "top_k"), ("--max-tokens", "0", "max_tokens"),
])
def test_bad_sampling_parameter(good, option, value, field):
    _fails(["run", str(good[1]), "--prompt", "hi", option, value], field)


def test_real_process_prints_one_line(good, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmc.cli", "build", str(tmp_path / "nope"), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
