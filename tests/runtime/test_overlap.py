"""Overlap (schedule and launch step N+1 before reading step N) changes no output: tokens, text,
stop strings, EOS, max_tokens and preemption, over many seeded mixed workloads."""

import random

import pytest
from fake_model import EOS, FakeModelBackend, drive, fake_bundle
from llmc.runtime import Engine, SamplingParams


def workload(seed: int):
    rng = random.Random(seed)
    requests = []
    for i in range(rng.randint(1, 12)):
        prompt = [rng.randint(2, 49) for _ in range(rng.randint(1, 30))]
        params = SamplingParams(
            max_tokens=rng.randint(1, 24), temperature=rng.choice([0.0, 0.0, 0.7, 1.0]), seed=seed * 100 + i,
            ignore_eos=rng.random() < 0.3, stop=[str(rng.randint(2, 49))] if rng.random() < 0.3 else [],
            stop_token_ids=[rng.randint(2, 49)] if rng.random() < 0.2 else [],
        )
        requests.append((rng.randint(0, 6), f"r{i}", prompt, params))  # (step it arrives at, id, prompt, params)
    return requests, rng.choice([16, 24, 64, 512])


def run(requests, num_kv_blocks: int, overlap: bool, max_batch=8):
    bundle = fake_bundle(max_batch=max_batch, max_tokens=32, max_seq_len=64, block_size=4)
    engine = Engine(bundle, FakeModelBackend(bundle, num_kv_blocks), overlap=overlap)
    return drive(engine, requests), engine.scheduler.num_preemptions


def test_overlap_on_and_off_give_the_same_outputs():
    preemptions = stops = eos = 0
    for seed in range(60):
        requests, blocks = workload(seed)
        off, p_off = run(requests, blocks, overlap=False)
        on, p_on = run(requests, blocks, overlap=True)
        assert on == off, f"seed {seed}"
        preemptions += p_off + p_on
        for rid, r in off.items():
            assert r["reason"] in ("stop", "length")
            stops += r["reason"] == "stop" and bool(r["tokens"]) and r["tokens"][-1] != EOS
            eos += bool(r["tokens"]) and r["tokens"][-1] == EOS
    assert preemptions > 0 and stops > 0 and eos > 0, (preemptions, stops, eos)


def test_outputs_do_not_depend_on_the_batch():
    requests, _ = workload(7)
    alone = {}
    for request in requests:
        alone.update(run([(0, *request[1:])], 512, overlap=True)[0])
    assert run(requests, 512, overlap=True)[0] == alone


@pytest.mark.parametrize("overlap", [False, True])
def test_the_step_in_flight_feeds_the_next_on_the_device(overlap):
    bundle = fake_bundle()
    backend = FakeModelBackend(bundle, 64)
    engine = Engine(bundle, backend, overlap=overlap)
    engine.add_request("a", [5, 6, 7], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    fed = [feed for _, feed in backend.launches]
    assert fed == ([[], [(0, 0)], [(0, 0)], [(0, 0)]] if overlap else [[]] * 4)
