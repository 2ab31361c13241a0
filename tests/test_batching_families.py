"""Batching and preemption change no output for an MoE model and a Gemma 3 model either."""

import pytest

from checkpoints import make_checkpoint
from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine
from test_batching import PROMPTS, _params


@pytest.fixture(scope="module", params=["qwen3_moe", "gemma3"])
def bundle(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    model_dir = make_checkpoint(request.param, root / "hf")
    out = root / "bundle"
    build(model_dir, out, BuildConfig(target="cpu", dtype="float32", max_batch_size=8, max_seq_len=64, max_num_batched_tokens=32,
                                      kv_block_size=4))
    engine = Engine.load(out)
    alone = [engine.generate([p], _params(i))[0].token_ids for i, p in enumerate(PROMPTS)]
    return out, alone


def test_batched_equals_alone(bundle):
    out, alone = bundle
    engine = Engine.load(out)
    together = engine.generate(PROMPTS, [_params(i) for i in range(len(PROMPTS))])
    assert [c.token_ids for c in together] == alone
    assert engine.block_manager.num_used_blocks == 0


def test_preemption_changes_nothing(bundle):
    out, alone = bundle
    engine = Engine.load(out, num_kv_blocks=16)  # 64 tokens of KV for 8 sequences of up to 42
    together = engine.generate(PROMPTS, [_params(i) for i in range(len(PROMPTS))])
    assert engine.scheduler.num_preemptions > 0, "the pool was meant to force preemption"
    assert [c.token_ids for c in together] == alone
    assert engine.block_manager.num_used_blocks == 0
