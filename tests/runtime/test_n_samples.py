"""`n` samples of one prompt: sample i equals the prompt run alone with seed + i, and the prompt's
full blocks are computed once and shared."""

import pytest
from llmc.errors import UserError
from llmc.runtime import SamplingParams
from fake_model import drive
from test_prefix_caching import make_engine

PROMPT = [5, 9, 11, 3, 8, 22, 17, 4, 30, 2, 6, 12, 40, 41, 19, 7, 27, 33]  # 18 tokens: 4 full blocks of 4


def sampled(**kw):
    return SamplingParams(**{"max_tokens": 10, "temperature": 1.0, "ignore_eos": True, **kw})


@pytest.mark.parametrize("caching", [False, True])
@pytest.mark.parametrize("overlap", [False, True])
def test_n_samples_equal_the_same_seeds_run_one_by_one(overlap, caching):
    n, seed = 4, 2**63 - 2  # seeds wrap: 2**63 - 2, 2**63 - 1, 0, 1
    engine = make_engine(overlap=overlap, caching=caching)
    together = drive(engine, [(0, "r", PROMPT, sampled(n=n, seed=seed))])
    assert sorted(together) == [("r", i) for i in range(n)]
    alone = {}
    for i in range(n):
        one = make_engine(overlap=overlap, caching=caching)
        alone["r", i] = drive(one, [(0, "r", PROMPT, sampled(seed=(seed + i) % 2**63))])["r", 0]
    assert together == alone
    assert len({tuple(r["tokens"]) for r in together.values()}) > 1


@pytest.mark.parametrize("caching", [False, True])
@pytest.mark.parametrize("overlap", [False, True])
def test_the_prompt_is_computed_once(overlap, caching):
    n, max_tokens = 4, 10
    engine = make_engine(overlap=overlap, caching=caching)
    drive(engine, [(0, "r", PROMPT, sampled(n=n, seed=1, max_tokens=max_tokens))])
    # 16 prompt tokens in full blocks once; each sample computes the 2 after them, then its
    # outputs but the last
    assert engine.backend.num_computed == 16 + n * 2 + n * (max_tokens - 1)


def test_samples_share_the_prompt_blocks_while_they_run():
    engine = make_engine()
    engine.add_request("r", PROMPT, sampled(n=3, seed=1))
    seqs = engine._by_request["r"]
    while not all(s.block_table for s in seqs):
        engine.step()
    assert seqs[1].block_table[:4] == seqs[0].block_table[:4] == seqs[2].block_table[:4]
    assert len({s.block_table[4] for s in seqs}) == 3  # each writes its own tail
    assert [engine.block_manager.ref_counts[b] for b in seqs[0].block_table[:4]] == [3] * 4


def test_without_a_seed_samples_take_consecutive_seeds():
    engine = make_engine()
    engine.add_request("r", PROMPT, sampled(n=3))
    seeds = [s.seed for s in engine._by_request["r"]]
    assert seeds == [seeds[0], (seeds[0] + 1) % 2**63, (seeds[0] + 2) % 2**63]


@pytest.mark.parametrize("overlap", [False, True])
def test_abort_ends_every_sample_and_frees_their_blocks(overlap):
    engine = make_engine(overlap=overlap)
    engine.add_request("r", PROMPT, sampled(n=3, seed=1, max_tokens=30))
    seqs = engine._by_request["r"]
    for _ in range(4):
        engine.step()
    assert all(s.block_table for s in seqs)
    engine.abort("r")
    assert [s.finish_reason for s in seqs] == ["abort"] * 3 and not engine.scheduler.has_unfinished
    while engine.has_unfinished():
        engine.step()
    assert engine.block_manager.num_used_blocks == 0 and not any(engine.block_manager.ref_counts)
    assert "r" not in engine._by_request
    engine.add_request("r", PROMPT, sampled(n=2, seed=1))  # the id is free again


def test_generate_returns_each_sample_with_its_index():
    engine = make_engine()
    out = engine.generate([PROMPT, PROMPT[:5]], [sampled(n=3, seed=4), sampled(seed=9)])
    assert [(c.request_id[-1], c.index) for c in out] == [("0", 0), ("0", 1), ("0", 2), ("1", 0)]
    assert [c.token_ids for c in out[:3]] == [c.token_ids for c in (
        make_engine().generate([PROMPT], sampled(seed=s))[0] for s in (4, 5, 6))]


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_n_is_refused(n):
    with pytest.raises(UserError, match="n must be"):
        SamplingParams(n=n)
