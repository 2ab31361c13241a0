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


def _set_rope_theta(value):
    def edit(model):
        config = json.loads((model / "config.json").read_text())
        config["rope_theta"] = value
        if isinstance(config.get("rope_parameters"), dict):
            config["rope_parameters"]["rope_theta"] = value
        (model / "config.json").write_text(json.dumps(config))
    return edit


def _set_eos(value):
    def edit(model):
        for name in ("config.json", "generation_config.json"):
            if (model / name).is_file():
                config = json.loads((model / name).read_text())
                config["eos_token_id"] = value
                (model / name).write_text(json.dumps(config))
    return edit


def _tokenizer(make):
    def edit(model):
        path = model / "tokenizer.json"
        path.unlink(missing_ok=True)
        make(path, model)
    return edit


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
    # inconsistent configs: one line naming the field, before any work
    "zero heads": (_set_config(num_attention_heads=0), ("config.json", "num_attention_heads")),
    "negative heads": (_set_config(num_attention_heads=-4), ("config.json", "num_attention_heads")),
    "zero kv heads": (_set_config(num_key_value_heads=0), ("config.json", "num_key_value_heads")),
    "negative layers": (_set_config(num_hidden_layers=-1), ("config.json", "num_hidden_layers")),
    "zero layers": (_set_config(num_hidden_layers=0), ("config.json", "num_hidden_layers")),
    "zero positions": (_set_config(max_position_embeddings=0), ("config.json", "max_position_embeddings")),
    "one position": (_set_config(max_position_embeddings=1), ("config.json", "max_position_embeddings")),
    "absurd positions": (_set_config(max_position_embeddings=2**40), ("config.json", "max_position_embeddings")),
    "huge vocab": (_set_config(vocab_size=2**40), ("config.json", "vocab_size")),
    "zero head_dim": (_set_config(head_dim=0), ("config.json", "head_dim")),
    "negative rope theta": (_set_rope_theta(-10000.0), ("config.json", "rope_theta")),
    "zero rope theta": (_set_rope_theta(0), ("config.json", "rope_theta")),
    "string rope theta": (_set_rope_theta("fast"), ("config.json", "rope")),
    "zero rms eps": (_set_config(rms_norm_eps=0), ("config.json", "rms_norm_eps")),
    "eos outside the vocabulary": (_set_eos(10**6), ("eos_token_id",)),
    "eos not a number": (_set_eos("</s>"), ("eos_token_id",)),
    "tokenizer.json is not a tokenizer": (_tokenizer(lambda p, m: p.write_text('{"hello": 1}')), ("tokenizer.json",)),
    "tokenizer.json links to an unrelated file": (_tokenizer(lambda p, m: p.symlink_to(m / "config.json")),
                                                  ("tokenizer.json",)),
    "tokenizer.json links to a device": (_tokenizer(lambda p, m: p.symlink_to("/dev/zero")), ("tokenizer.json",)),
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
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--max-seq-len", "1000000000"], "--max-seq-len",
           "over the limit")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--max-seq-len", "0"], "--max-seq-len")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--target", "sm70"], "--target", "sm70")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--kv-block-size", "3"], "--kv-block-size")
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--op-priority", "linear=magic"], "linear", "magic")
    assert not (tmp_path / "o").exists()


def test_smallest_context(good, tmp_path):
    _fails(["build", str(good[0]), "-o", str(tmp_path / "o"), "--max-seq-len", "1"], "--max-seq-len", "at least 2")
    assert not (tmp_path / "o").exists()
    result = CliRunner().invoke(main, ["build", str(good[0]), "-o", str(tmp_path / "two"), "--max-seq-len", "2"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def _big_weight(model):
    from safetensors.torch import load_file, save_file

    tensors = load_file(model / "model.safetensors")
    name = next(n for n in sorted(tensors) if n.endswith("mlp.down_proj.weight"))
    tensors[name] = tensors[name].float()
    tensors[name][0, 0] = 1e6  # finite in float32, infinite in float16
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})


def test_float16_overflow_is_one_line(good, tmp_path):
    model = _broken_copy(good[0], tmp_path, _big_weight)
    _fails(["build", str(model), "-o", str(tmp_path / "o"), "--dtype", "float16"], "float16", "down_proj")
    assert not (tmp_path / "o").exists()


def test_prompt_too_long(good):
    _fails(["run", str(good[1]), "--prompt", "x " * 40], "prompt has", "--max-seq-len")


@pytest.mark.parametrize("option,value,field", [
    ("--temperature", "-1", "temperature"), ("--top-p", "0", "top_p"), ("--top-p", "1.5", "top_p"),
    ("--top-k", "-5", "top_k"), ("--max-tokens", "0", "max_tokens"),
    # what the kernels and buffers hold: an int32 top_k, float32 temperature and top_p
    ("--top-k", str(2**31), "top_k"), ("--top-k", str(2**70), "top_k"), ("--temperature", "1e-30", "temperature"),
    ("--temperature", "1e300", "temperature"), ("--top-p", "1e-60", "top_p"), ("--max-tokens", str(2**40), "max_tokens"),
    ("--seed", str(2**64), "seed"),
])
def test_bad_sampling_parameter(good, option, value, field):
    _fails(["run", str(good[1]), "--prompt", "hi", option, value], field)


@pytest.mark.parametrize("edit, words", [
    (lambda plan: plan["steps"][0].update(op="no_such_op"), ("op 'no_such_op'",)),
    (lambda plan: plan["steps"][0].update(provider="triton"), ("native steps only",)),
    (lambda plan: plan.update(arena_bytes=2**62), ("arena_bytes",)),
])
def test_a_redigested_cpu_plan_the_runtime_cannot_run(good, tmp_path, edit, words):
    from llmc.artifacts import dumps, root_digest, sha256_bytes

    bundle = tmp_path / "b"
    shutil.copytree(good[1], bundle)
    rel = sorted(p.relative_to(bundle).as_posix() for p in (bundle / "plans").glob("*.json"))[0]
    plan = json.loads((bundle / rel).read_text())
    edit(plan)
    (bundle / rel).write_bytes(dumps(plan))
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"][rel] = {"sha256": sha256_bytes(dumps(plan)), "size": len(dumps(plan))}
    manifest["root_digest"] = root_digest(manifest)
    (bundle / "manifest.json").write_bytes(dumps(manifest))
    for args in (["verify", str(bundle)], ["run", str(bundle), "--prompt", "hi"]):
        _fails(args, rel, *words)


def test_the_engine_stays_healthy_after_refused_requests(good):
    from llmc.errors import UserError
    from llmc.runtime import Engine, SamplingParams

    engine = Engine.load(good[1], device="cpu")
    try:
        greedy = SamplingParams(max_tokens=3, temperature=0)
        before = engine.generate([[5, 6, 7]], greedy)[0].token_ids
        for bad in ({"top_k": 2**31}, {"temperature": 1e-30}, {"stop_token_ids": [2**40]}, {"top_p": 1e-60}):
            with pytest.raises(UserError):
                engine.add_request(f"bad-{len(bad)}", [5, 6, 7], SamplingParams(**bad))
        with pytest.raises(UserError):
            engine.add_request("too-long", [1] * 1000, greedy)
        assert not engine.has_unfinished()
        assert engine.generate([[5, 6, 7]], greedy)[0].token_ids == before
    finally:
        engine.close()


def test_real_process_prints_one_line(good, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "llmc.cli", "build", str(tmp_path / "nope"), "-o", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
