"""Continuous batching and preemption change no output."""

import pytest

from checkpoints import make_checkpoint
from llmc.aot.build import BuildConfig, build
from llmc.runtime import Engine, SamplingParams

PROMPTS = [[(7 * i + 3 * j) % 200 + 3 for j in range(n)] for i, n in enumerate([1, 3, 5, 9, 14, 17, 22, 30])]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("batching")
    model_dir = make_checkpoint("qwen3", root / "hf")
    out = root / "bundle"
    build(model_dir, out, BuildConfig(target="cpu", dtype="float32", max_batch_size=8, max_seq_len=64, max_num_batched_tokens=32,
                                      kv_block_size=4))
    return out


def _params(i: int) -> SamplingParams:
    if i % 2:
        return SamplingParams(max_tokens=12, temperature=0.8, top_p=0.9, top_k=20, seed=100 + i, ignore_eos=True)
    return SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def alone(bundle):
    engine = Engine.load(bundle)
    return [engine.generate([p], _params(i))[0].token_ids for i, p in enumerate(PROMPTS)]


def test_batched_equals_alone(bundle, alone):
    engine = Engine.load(bundle)
    together = engine.generate(PROMPTS, [_params(i) for i in range(len(PROMPTS))])
    assert [c.token_ids for c in together] == alone
    assert engine.block_manager.num_used_blocks == 0


def test_preemption_changes_nothing(bundle, alone):
    engine = Engine.load(bundle, num_kv_blocks=16)  # 64 tokens of KV for 8 sequences of up to 42
    together = engine.generate(PROMPTS, [_params(i) for i in range(len(PROMPTS))])
    assert engine.scheduler.num_preemptions > 0, "the pool was meant to force preemption"
    assert [c.token_ids for c in together] == alone
    assert engine.block_manager.num_used_blocks == 0


def test_requests_join_between_steps(bundle, alone):
    engine = Engine.load(bundle)
    engine.add_request("a", PROMPTS[3], _params(3))
    outputs = {"a": [], "b": []}
    for _ in range(3):
        for o in engine.step():
            outputs[o.request_id] += o.new_token_ids
    engine.add_request("b", PROMPTS[6], _params(6))
    while engine.has_unfinished():
        for o in engine.step():
            outputs[o.request_id] += o.new_token_ids
    assert outputs == {"a": alone[3], "b": alone[6]}


def test_seeded_sampling_is_reproducible(bundle):
    engine = Engine.load(bundle)
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=7, ignore_eos=True)
    first = engine.generate([PROMPTS[4]], params)[0].token_ids
    assert engine.generate([PROMPTS[4]], params)[0].token_ids == first
    other = engine.generate([PROMPTS[4]], SamplingParams(max_tokens=10, temperature=1.0, seed=8, ignore_eos=True))
    assert other[0].token_ids != first


def test_stops_on_eos_and_max_tokens(bundle):
    engine = Engine.load(bundle)
    (c,) = engine.generate([PROMPTS[2]], SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True))
    assert len(c.token_ids) == 5 and c.finish_reason == "length"
    eos = c.token_ids[2]
    engine.scheduler.eos_token_ids = frozenset({eos})
    (c,) = engine.generate([PROMPTS[2]], SamplingParams(max_tokens=5, temperature=0.0))
    assert c.token_ids[-1] == eos and c.finish_reason == "stop" and len(c.token_ids) <= 3
