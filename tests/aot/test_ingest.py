"""Ingest: both rope spellings, sharded checkpoints, 16-bit checkpoints, sliding-window layouts."""

import json
import shutil

import pytest
import torch

from checkpoints import make_checkpoint
from llmc.aot.ingest import read_spec, read_weights
from llmc.aot.rope import cos_sin_cache


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_checkpoint("llama", tmp_path_factory.mktemp("ingest") / "hf")


def _edit(src, dst, **fields):
    shutil.copytree(src, dst)
    config = json.loads((dst / "config.json").read_text())
    for key, value in fields.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def test_hub_and_transformers5_rope_spellings_agree(llama, tmp_path):
    new = read_spec(llama)  # transformers 5 writes rope_parameters
    params = json.loads((llama / "config.json").read_text())["rope_parameters"]
    scaling = {k: v for k, v in params.items() if k != "rope_theta"}
    old = read_spec(_edit(llama, tmp_path / "old", rope_parameters=None, rope_theta=params["rope_theta"],
                          rope_scaling=scaling))
    assert (old.rope_theta, old.rope_scaling) == (new.rope_theta, new.rope_scaling)
    assert new.rope_scaling["rope_type"] == "llama3" and new.rope_theta == 500000.0
    table = cos_sin_cache(new.head_dim, new.rope_theta, new.rope_scaling, 64)
    assert not torch.equal(table, cos_sin_cache(new.head_dim, new.rope_theta, {}, 64))  # the scaling is applied


def test_rope_matches_transformers(llama):
    import transformers

    config = transformers.AutoConfig.from_pretrained(llama)
    rotary = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    positions = torch.arange(40)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    spec = read_spec(llama)
    ours_cos, ours_sin = cos_sin_cache(spec.head_dim, spec.rope_theta, spec.rope_scaling, 40).chunk(2, dim=-1)
    torch.testing.assert_close(torch.cat([ours_cos, ours_cos], -1), cos[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.cat([ours_sin, ours_sin], -1), sin[0], rtol=1e-6, atol=1e-6)


def test_sharded_checkpoint_reads_the_same_weights(llama, tmp_path):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(llama)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    spec = read_spec(llama)
    one, many = read_weights(llama, spec, torch.float32), read_weights(tmp_path / "sharded", spec, torch.float32)
    assert one.keys() == many.keys() and all(torch.equal(one[k].load(), many[k].load()) for k in one)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_checkpoints(tmp_path, dtype):
    model = make_checkpoint("qwen2", tmp_path / "hf", dtype=dtype)
    spec = read_spec(model)
    assert spec.checkpoint_dtype == str(dtype).removeprefix("torch.")
    weights = read_weights(model, spec, torch.float32)
    assert weights["layers.0.q_proj.bias"].dtype == torch.float32  # converted to the build dtype


def test_sliding_window_layouts(llama, tmp_path):
    mistral = read_spec(make_checkpoint("mistral", tmp_path / "mistral"))
    assert mistral.sliding_windows == (5, 5)
    qwen = _edit(llama, tmp_path / "qwen2", architectures=["Qwen2ForCausalLM"], use_sliding_window=True,
                 sliding_window=7, max_window_layers=1, layer_types=None)
    assert read_spec(qwen).sliding_windows == (0, 7)
    assert read_spec(llama).sliding_windows == (0, 0)


def test_mqa_and_explicit_head_dim(tmp_path):
    spec = read_spec(make_checkpoint("qwen3", tmp_path / "qwen3"))
    assert (spec.num_q_heads, spec.num_kv_heads, spec.head_dim, spec.hidden_size) == (4, 2, 32, 64)
    assert spec.qk_norm
    mistral = read_spec(make_checkpoint("mistral", tmp_path / "mistral"))
    assert mistral.num_kv_heads == 1
