"""Automatic prefix caching in the engine: the same outputs with and without it (with preemption,
overlap on and off), hits on a multi-turn chat, fewer tokens computed, blocks released."""

import random

import pytest
from fake_model import FakeModelBackend, drive, fake_bundle
from llmc.runtime import Engine, SamplingParams


class CountingBackend(FakeModelBackend):
    """Counts the tokens whose KV each launch writes (the prompt and decode tokens computed)."""

    num_computed = 0

    def launch(self, name, feed, want_logits):
        self.num_computed += int((self.inputs(name)["slot_mapping"] >= 0).sum())
        return super().launch(name, feed, want_logits)


def make_engine(num_kv_blocks=512, overlap=True, caching=True, max_batch=8):
    bundle = fake_bundle(max_batch=max_batch, max_tokens=32, max_seq_len=64, block_size=4)
    return Engine(bundle, CountingBackend(bundle, num_kv_blocks), overlap=overlap, enable_prefix_caching=caching)


def workload(seed: int):
    """Prompts that share prefixes (a few stems, some repeated whole), arriving over a few steps."""
    rng = random.Random(seed)
    stems = [[rng.randint(2, 49) for _ in range(rng.randint(0, 20))] for _ in range(3)]
    requests = []
    for i in range(rng.randint(2, 12)):
        prompt = rng.choice(stems) + [rng.randint(2, 49) for _ in range(rng.randint(1 if i % 3 else 0, 8))]
        prompt = prompt or [7]
        params = SamplingParams(
            max_tokens=rng.randint(1, 20), temperature=rng.choice([0.0, 0.7, 1.0]), seed=seed * 100 + i,
            ignore_eos=rng.random() < 0.5, stop=[str(rng.randint(2, 49))] if rng.random() < 0.2 else [],
            n=rng.choice([1, 1, 1, 2, 3]),
        )
        requests.append((rng.randint(0, 8), f"r{i}", prompt, params))
    return requests, rng.choice([16, 24, 64, 512])


def test_outputs_with_and_without_prefix_caching_are_the_same():
    preemptions = hits = 0
    for seed in range(40):
        requests, blocks = workload(seed)
        reference = drive(make_engine(512, overlap=False, caching=False), requests)  # no preemption
        for overlap in (False, True):
            for caching in (False, True):
                engine = make_engine(blocks, overlap=overlap, caching=caching)
                assert drive(engine, requests) == reference, f"seed {seed}, overlap {overlap}, caching {caching}"
                stats = engine.stats()
                preemptions += stats["num_preemptions"]
                hits += stats["prefix_cache_hits"]
    assert preemptions > 0 and hits > 0, (preemptions, hits)


def chat(engine, turns: int, seed: int):
    """Each turn's prompt is the previous prompt, its answer and new user tokens."""
    rng = random.Random(seed)
    prompt, answers = [rng.randint(2, 49) for _ in range(9)], []
    for turn in range(turns):
        params = SamplingParams(max_tokens=6, temperature=0.8, seed=turn, ignore_eos=True)
        answer = engine.generate([prompt], params)[0].token_ids
        answers.append(answer)
        prompt = prompt + answer + [rng.randint(2, 49) for _ in range(3)]
    return answers


@pytest.mark.parametrize("overlap", [False, True])
def test_a_multi_turn_chat_hits_the_cache_and_computes_less(overlap):
    cached, plain = make_engine(overlap=overlap), make_engine(overlap=overlap, caching=False)
    assert chat(cached, 5, seed=3) == chat(plain, 5, seed=3)
    stats = cached.stats()
    # turn prompts are 9, 18, 27, 36, 45 tokens; the previous turn wrote its prompt and 5 answer
    # tokens (the last is never computed), so its full blocks of 4 hold 12, 20, 32, 40 tokens
    assert stats["prefix_cache_queries"] == 9 + 18 + 27 + 36 + 45
    assert stats["prefix_cache_hits"] == 12 + 20 + 32 + 40
    assert plain.stats()["prefix_cache_queries"] == 0
    assert plain.backend.num_computed - cached.backend.num_computed == stats["prefix_cache_hits"]


def test_stats_report_usage_and_preemptions():
    engine = make_engine(num_kv_blocks=10)
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    for i in range(3):
        engine.add_request(f"r{i}", [3 + i] * 6, params)
    usages = []
    while engine.has_unfinished():
        engine.step()
        usages.append(engine.stats()["kv_cache_usage"])
    stats = engine.stats()
    assert max(usages) == 1.0 and stats["kv_cache_usage"] == 0.0 and stats["num_preemptions"] > 0
    assert stats["kv_blocks_used"] == 0 and stats["kv_blocks_total"] == 10


@pytest.mark.parametrize("overlap", [False, True])
def test_abort_while_sharing_releases_only_its_references(overlap):
    engine = make_engine(overlap=overlap)
    prompt = list(range(2, 20))
    greedy = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    expected = engine.generate([prompt], greedy)[0].token_ids
    engine.add_request("a", prompt, greedy)
    engine.add_request("b", prompt, greedy)
    for _ in range(3):
        engine.step()
    a, b = engine._by_request["a"][0], engine._by_request["b"][0]
    assert a.block_table[:4] == b.block_table[:4]  # the 16 tokens of 4 full blocks are shared
    engine.abort("a")
    assert all(engine.block_manager.ref_counts[i] == 1 for i in b.block_table)
    tokens = []
    while engine.has_unfinished():
        tokens += [t for o in engine.step() if o.request_id == "b" for t in o.new_token_ids]
    assert b.output_token_ids[-len(tokens):] == tokens and b.output_token_ids == expected
    assert engine.block_manager.num_used_blocks == 0


# -- the cpu backend: a real (tiny, random) model --------------------------------------------------


@pytest.fixture(scope="module")
def cpu_bundle(tmp_path_factory):
    pytest.importorskip("torch")
    from checkpoints import make_checkpoint
    from llmc.aot.build import BuildConfig, build

    root = tmp_path_factory.mktemp("prefix")
    make_checkpoint("qwen3", root / "hf")
    build(root / "hf", root / "bundle", BuildConfig(target="cpu", dtype="float32", max_batch_size=4, max_seq_len=64,
                                                    max_num_batched_tokens=32, kv_block_size=4))
    return root / "bundle"


@pytest.mark.parametrize("overlap", [False, True])
def test_cpu_multi_turn_chat_and_n_samples_match_without_prefix_caching(cpu_bundle, overlap):
    runs = {}
    for caching in (False, True):
        engine = Engine.load(cpu_bundle, verify="none", overlap=overlap, enable_prefix_caching=caching,
                             num_kv_blocks=24)
        answers = chat(engine, 4, seed=5)
        samples = engine.generate([list(range(3, 21))], SamplingParams(max_tokens=6, temperature=1.0, seed=7, n=3))
        runs[caching] = answers, [c.token_ids for c in samples], engine.stats()
    assert runs[True][:2] == runs[False][:2]
    stats = runs[True][2]
    assert stats["prefix_cache_hits"] > 0 and stats["prefix_cache_queries"] > stats["prefix_cache_hits"]
    assert stats["kv_blocks_used"] == 0
    alone = Engine.load(cpu_bundle, verify="none", overlap=overlap)
    assert runs[True][1] == [alone.generate([list(range(3, 21))], SamplingParams(max_tokens=6, temperature=1.0,
                                                                                   seed=7 + i))[0].token_ids
                             for i in range(3)]
