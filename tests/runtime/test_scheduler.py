import random

import pytest
from llmc.errors import UserError
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.sampling_params import SamplingParams, uniform_draw
from llmc.runtime.scheduler import Scheduler
from llmc.runtime.sequence import Sequence, SequenceStatus

EOS = 0


def next_token(history, seed, index):
    """A deterministic stand-in for a model plus sampler; never returns EOS."""
    h = sum((i + 1) * t for i, t in enumerate(history))
    return (h * 7 + int(uniform_draw(seed, index) * 1000)) % 40 + 1


class FakeRunner:
    """Writes each computed token into a paged KV pool and samples from what the pool holds,
    so a wrong block table, slot or recompute after preemption changes the outputs."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.bm = scheduler.block_manager
        self.kv = [None] * (self.bm.num_blocks * self.bm.block_size)

    def step(self, out):
        assert len(out.seqs) <= self.scheduler.max_num_seqs
        assert out.num_batched_tokens <= self.scheduler.max_num_batched_tokens
        assert out.is_prefill or all(n == 1 for n in out.num_new_tokens)
        token_ids = []
        for seq, n, start, index in zip(out.seqs, out.num_new_tokens, out.starts, out.sample_indices):
            assert start + n == seq.num_computed_tokens  # advanced when scheduled
            assert len(seq.block_table) * self.bm.block_size >= start + n
            for p in range(start, start + n):
                self.kv[self.bm.slot(seq, p)] = (seq.seq_id, p, seq.token_at(p))
            if index < 0:
                token_ids.append(None)
                continue
            cached = [self.kv[self.bm.slot(seq, p)] for p in range(start + n)]
            assert [c[:2] for c in cached] == [(seq.seq_id, p) for p in range(start + n)]
            token_ids.append(next_token([c[2] for c in cached], seq.seed, index))
        return token_ids


def make_scheduler(num_blocks=64, block_size=4, max_num_seqs=8, max_num_batched_tokens=64, max_model_len=256):
    bm = BlockManager(num_blocks, block_size)
    return Scheduler(bm, max_num_seqs, max_num_batched_tokens, max_model_len, eos_token_ids={EOS})


def make_seq(seq_id, prompt_len, **params):
    prompt = [(seq_id * 13 + i * 5) % 40 + 1 for i in range(prompt_len)]
    return Sequence(seq_id, f"req-{seq_id}", prompt, SamplingParams(**{"max_tokens": 8, **params}))


def step(scheduler, runner):
    out = scheduler.schedule()
    scheduler.postprocess(out, runner.step(out))
    return out


def run_all(scheduler, seqs):
    runner = FakeRunner(scheduler)
    for seq in seqs:
        scheduler.check_admissible(seq)
        scheduler.add(seq)
    steps = 0
    while scheduler.has_unfinished:
        step(scheduler, runner)
        steps += 1
        assert steps < 10_000, "no progress"
    assert scheduler.block_manager.num_used_blocks == 0
    assert scheduler.block_manager.num_free_blocks == scheduler.block_manager.num_blocks
    return {seq.request_id: seq.output_token_ids for seq in seqs}


def shape(out):
    return out.is_prefill, [s.seq_id for s in out.seqs], out.num_new_tokens, out.samples


def test_fifo_admission_within_max_num_seqs():
    sched = make_scheduler(max_num_seqs=2)
    runner = FakeRunner(sched)
    seqs = [make_seq(i, 3, max_tokens=2 + i) for i in range(4)]
    for seq in seqs:
        sched.add(seq)
    assert shape(step(sched, runner)) == (True, [0, 1], [3, 3], [True, True])
    assert sched.num_running == 2 and sched.num_waiting == 2
    assert shape(step(sched, runner)) == (False, [0, 1], [1, 1], [True, True])
    assert seqs[0].finish_reason == "length"
    # 2 is admitted into the step where 1 decodes (a prefill step: a chunk of 3 tokens)
    assert shape(step(sched, runner)) == (True, [1, 2], [1, 3], [True, True])
    assert seqs[1].finish_reason == "length"
    assert shape(step(sched, runner)) == (True, [2, 3], [1, 3], [True, True])


def test_token_budget_chunks_the_last_admitted_prompt():
    sched = make_scheduler(max_num_batched_tokens=16)
    runner = FakeRunner(sched)
    for i in range(5):
        sched.add(make_seq(i, 6))
    assert shape(step(sched, runner)) == (True, [0, 1, 2], [6, 6, 4], [True, True, False])
    # decodes and the unfinished prompt continue first, then admission fills the budget
    assert shape(step(sched, runner)) == (True, [0, 1, 2, 3, 4], [1, 1, 2, 6, 6], [True] * 5)
    assert shape(step(sched, runner)) == (False, [0, 1, 2, 3, 4], [1] * 5, [True] * 5)


def test_chunked_prefill_of_a_long_prompt():
    sched = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(sched)
    seq = make_seq(0, 20)
    sched.add(seq)
    assert shape(step(sched, runner)) == (True, [0], [8], [False])
    assert seq.num_computed_tokens == 8 and seq.output_token_ids == []
    assert shape(step(sched, runner)) == (True, [0], [8], [False])
    assert shape(step(sched, runner)) == (True, [0], [4], [True])
    assert seq.num_computed_tokens == 20 and len(seq.output_token_ids) == 1
    assert shape(step(sched, runner)) == (False, [0], [1], [True])


def test_a_one_token_last_chunk_runs_in_a_decode_step():
    sched = make_scheduler(max_num_batched_tokens=8)
    runner = FakeRunner(sched)
    sched.add(make_seq(0, 9))
    assert shape(step(sched, runner)) == (True, [0], [8], [False])
    assert shape(step(sched, runner)) == (False, [0], [1], [True])


def test_a_decode_that_preempts_admits_no_one_in_that_step():
    sched = make_scheduler(num_blocks=4, block_size=4)
    runner = FakeRunner(sched)
    a, b, c = make_seq(0, 8, max_tokens=8), make_seq(1, 8, max_tokens=8), make_seq(2, 1)
    sched.add(a)
    sched.add(b)
    step(sched, runner)
    sched.add(c)
    assert shape(step(sched, runner)) == (False, [0], [1], [True])  # b preempted, c not admitted
    assert list(sched.waiting) == [b, c]


def test_chunked_outputs_equal_unchunked_outputs():
    seqs = lambda: [make_seq(i, 5 + 7 * i, max_tokens=6) for i in range(5)]  # noqa: E731
    whole = run_all(make_scheduler(max_num_batched_tokens=64), seqs())
    chunked = run_all(make_scheduler(max_num_seqs=4, max_num_batched_tokens=5), seqs())
    assert chunked == whole


def test_new_sequences_join_between_decode_steps():
    sched = make_scheduler()
    runner = FakeRunner(sched)
    sched.add(make_seq(0, 4, max_tokens=10))
    step(sched, runner)
    assert shape(step(sched, runner)) == (False, [0], [1], [True])
    sched.add(make_seq(1, 5, max_tokens=10))
    assert shape(step(sched, runner)) == (True, [0, 1], [1, 5], [True, True])  # 0 keeps decoding
    assert shape(step(sched, runner)) == (False, [0, 1], [1, 1], [True, True])


def test_decode_preempts_the_most_recent_sequence_when_blocks_run_out():
    sched = make_scheduler(num_blocks=4, block_size=4)
    runner = FakeRunner(sched)
    a, b = make_seq(0, 8, max_tokens=8), make_seq(1, 8, max_tokens=8)
    sched.add(a)
    sched.add(b)
    step(sched, runner)  # 2 blocks each: the pool is full
    assert sched.block_manager.num_free_blocks == 0
    out = step(sched, runner)  # a needs a third block: b goes
    assert shape(out) == (False, [0], [1], [True])
    assert sched.num_preemptions == 1
    assert b.status == SequenceStatus.WAITING and b.num_computed_tokens == 0 and b.block_table == []
    assert list(sched.waiting) == [b] and len(b.output_token_ids) == 1
    assert len(a.block_table) == 3


def test_preempted_sequence_goes_to_the_front_of_the_queue():
    sched = make_scheduler(num_blocks=4, block_size=4, max_num_seqs=2)
    runner = FakeRunner(sched)
    a, b, c = (make_seq(i, 8, max_tokens=8) for i in range(3))
    for seq in (a, b, c):
        sched.add(seq)
    step(sched, runner)
    step(sched, runner)
    assert list(sched.waiting) == [b, c]


@pytest.mark.parametrize("num_blocks, block_size, max_num_batched_tokens", [(6, 4, 16), (8, 2, 8), (3, 8, 8), (14, 1, 4)])
def test_outputs_with_a_tiny_pool_equal_outputs_with_a_large_pool(num_blocks, block_size, max_num_batched_tokens):
    def seqs():
        return [make_seq(i, 3 + (i * 5) % 9, max_tokens=4 + (i * 3) % 7, seed=100 + i) for i in range(7)]

    reference = run_all(make_scheduler(num_blocks=256, max_num_batched_tokens=256), seqs())
    sched = make_scheduler(num_blocks, block_size, max_num_seqs=4, max_num_batched_tokens=max_num_batched_tokens)
    assert run_all(sched, seqs()) == reference
    assert sched.num_preemptions > 0


def test_random_workloads_match_the_reference():
    rng = random.Random(0)
    num_preemptions = 0
    for trial in range(20):
        specs = [(rng.randint(1, 30), rng.randint(1, 12)) for _ in range(rng.randint(1, 10))]
        seqs = lambda: [make_seq(i, p, max_tokens=t) for i, (p, t) in enumerate(specs)]  # noqa: E731
        reference = run_all(make_scheduler(num_blocks=512, max_num_batched_tokens=512, max_model_len=64), seqs())
        block_size = rng.choice([1, 2, 4, 16])
        num_blocks = -(-42 // block_size) + rng.randint(0, 8)  # fits the longest request alone
        max_num_seqs = rng.randint(1, 6)
        sched = make_scheduler(
            num_blocks,
            block_size,
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_seqs + rng.randint(0, 20),
            max_model_len=64,
        )
        assert run_all(sched, seqs()) == reference, f"trial {trial}"
        num_preemptions += sched.num_preemptions
    assert num_preemptions > 0


def test_eos_stops_unless_ignore_eos():
    sched = make_scheduler()
    seq = make_seq(0, 4, max_tokens=10)
    sched.add(seq)
    out = sched.schedule()
    sched.postprocess(out, [EOS])
    assert seq.finish_reason == "stop" and seq.output_token_ids == [EOS] and not sched.has_unfinished

    seq = make_seq(1, 4, max_tokens=10, ignore_eos=True)
    sched.add(seq)
    sched.postprocess(sched.schedule(), [EOS])
    assert not seq.is_finished


def test_stop_token_ids_stop():
    sched = make_scheduler()
    seq = make_seq(0, 4, max_tokens=10, stop_token_ids=[33], ignore_eos=True)
    sched.add(seq)
    sched.postprocess(sched.schedule(), [5])
    sched.postprocess(sched.schedule(), [33])
    assert seq.finish_reason == "stop" and seq.output_token_ids == [5, 33]


def test_max_tokens_and_max_model_len_stop_with_length():
    out = run_all(make_scheduler(), [make_seq(0, 4, max_tokens=3)])
    assert len(out["req-0"]) == 3
    sched = make_scheduler(max_model_len=10)
    seq = make_seq(1, 7, max_tokens=100)
    out = run_all(sched, [seq])
    assert len(out["req-1"]) == 3 and seq.num_tokens == 10 and seq.finish_reason == "length"


def test_finish_stops_a_running_sequence_and_frees_its_blocks():
    sched = make_scheduler()
    seq = make_seq(0, 4, max_tokens=10)
    sched.add(seq)
    runner = FakeRunner(sched)
    step(sched, runner)
    sched.finish(seq, "stop")  # a stop string, found by the output processor
    assert seq.finish_reason == "stop" and sched.block_manager.num_used_blocks == 0 and not sched.has_unfinished


def test_scheduling_ahead_drops_the_token_in_flight_of_a_finished_sequence():
    sched = make_scheduler()
    seq = make_seq(0, 4, max_tokens=10)
    sched.add(seq)
    first = sched.schedule()
    second = sched.schedule()  # scheduled before the first step's token is known
    assert second.starts == [4] and seq.output_token_ids == [-1, -1]
    sched.postprocess(first, [EOS])
    assert seq.finish_reason == "stop" and seq.output_token_ids == [EOS]
    sched.postprocess(second, [7])
    assert seq.output_token_ids == [EOS] and sched.block_manager.num_used_blocks == 0


def test_a_sequence_whose_token_in_flight_is_its_last_is_not_scheduled_again():
    sched = make_scheduler()
    seq = make_seq(0, 4, max_tokens=1)
    sched.add(seq)
    first = sched.schedule()
    assert sched.schedule() is None
    sched.postprocess(first, [5])
    assert seq.finish_reason == "length" and seq.output_token_ids == [5]


def test_abort_frees_blocks_from_running_and_waiting():
    sched = make_scheduler(max_num_seqs=1)
    runner = FakeRunner(sched)
    a, b = make_seq(0, 9), make_seq(1, 5)
    sched.add(a)
    sched.add(b)
    step(sched, runner)
    assert sched.block_manager.num_used_blocks == 3
    assert sched.abort("req-1") is b and b.finish_reason == "abort" and sched.num_waiting == 0
    out = sched.schedule()
    token_ids = runner.step(out)
    assert sched.abort("req-0") is a  # aborted after its step ran, before postprocess
    sched.postprocess(out, token_ids)
    assert a.finish_reason == "abort" and len(a.output_token_ids) == 1  # its token in flight is dropped
    assert sched.block_manager.num_used_blocks == 0 and not sched.has_unfinished
    assert sched.abort("req-0") is None and sched.schedule() is None


@pytest.mark.parametrize(
    "prompt_len, max_tokens, message",
    [
        (30, 8, "needs 10 KV blocks; the pool has 8"),
        (20, 20, "needs 10 KV blocks; the pool has 8"),
        (40, 1, "prompt has 40 tokens; max_model_len is 40"),
        (0, 1, "prompt is empty"),
    ],
)
def test_inadmissible_requests_raise(prompt_len, max_tokens, message):
    sched = make_scheduler(num_blocks=8, block_size=4, max_model_len=40)
    with pytest.raises(UserError, match=message):
        sched.check_admissible(make_seq(0, prompt_len, max_tokens=max_tokens))


def test_a_request_that_fills_the_whole_pool_is_admissible_and_finishes():
    sched = make_scheduler(num_blocks=8, block_size=4, max_model_len=40)
    seq = make_seq(0, 30, max_tokens=3)  # at most 32 tokens in the cache
    assert sched.can_ever_fit(32) and not sched.can_ever_fit(33)
    assert len(run_all(sched, [seq, make_seq(1, 6)])["req-0"]) == 3


def test_bad_limits_raise():
    with pytest.raises(UserError, match="max_num_seqs"):
        make_scheduler(max_num_seqs=0)
    with pytest.raises(UserError, match="max_num_batched_tokens"):
        make_scheduler(max_num_seqs=8, max_num_batched_tokens=4)
