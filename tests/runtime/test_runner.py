"""The ModelRunner alone: which plan, which inputs, written in place, with no device."""

import numpy as np
import pytest
from fake_model import FakeModelBackend, fake_bundle
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.runner import ModelRunner
from llmc.runtime.sampler import RowError, Sampler
from llmc.runtime.sampling_params import SamplingParams, uniform_draw
from llmc.runtime.scheduler import Scheduler
from llmc.runtime.sequence import Sequence


def setup(max_batch=8, max_tokens=32, num_blocks=64):
    bundle = fake_bundle(max_batch=max_batch, max_tokens=max_tokens, block_size=4)
    backend = FakeModelBackend(bundle, num_blocks)
    plans = {n: bundle.plan(n) for n in bundle.plans()}
    runner = ModelRunner(backend, plans, 4, Sampler(50))
    sched = Scheduler(BlockManager(num_blocks, 4), max_batch, max_tokens, 64)
    return backend, runner, sched


def seq(i, n, **params):
    return Sequence(i, f"r{i}", [2 + (i + j) % 40 for j in range(n)], SamplingParams(**{"max_tokens": 8, **params}))


def test_prefill_inputs_and_padding():
    backend, runner, sched = setup()
    a, b = seq(0, 5, temperature=0.0), seq(1, 3, temperature=0.5, top_k=7, top_p=0.9, seed=11)
    sched.add(a), sched.add(b)
    out = sched.schedule()
    launch = runner.launch(out)
    name, _ = backend.launches[-1]
    assert name == "prefill_t8"
    v = backend.inputs(name)
    assert v["input_ids"].tolist() == a.prompt_token_ids + b.prompt_token_ids
    assert v["positions"].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert v["slot_mapping"].tolist() == [0, 1, 2, 3, 4, 8, 9, 10]  # a: blocks 0, 1; b: block 2
    assert v["seq_lens"].tolist() == [5, 3] + [0] * 6
    assert v["query_start_loc"].tolist() == [0, 5, 8] + [8] * 6
    assert v["block_tables"][:2, :2].tolist() == [[0, 1], [2, 0]]
    assert v["logits_indices"].tolist() == [4, 7] + [0] * 6
    assert v["temperature"].tolist()[:2] == [0.0, 0.5] and v["top_k"].tolist()[:2] == [0, 7]
    assert v["top_p"].tolist() == pytest.approx([1.0, 0.9] + [1.0] * 6)
    assert v["uniform"][1] == pytest.approx(uniform_draw(11, 0))
    assert launch.rows == [0, 1]


def test_decode_reads_only_the_last_token_and_pads_what_the_last_step_used():
    backend, runner, sched = setup()
    seqs = [seq(i, 4) for i in range(3)]
    for s in seqs:
        sched.add(s)
    out = sched.schedule()
    sched.postprocess(out, runner.wait(runner.launch(out)))
    out = sched.schedule()
    runner.launch(out)
    name, _ = backend.launches[-1]
    v = backend.inputs(name)
    assert name == "decode_b4"
    assert v["input_ids"].tolist()[:3] == [s.output_token_ids[0] for s in seqs] and v["input_ids"][3] == 0
    assert v["positions"].tolist() == [4, 4, 4, 0] and v["slot_mapping"].tolist() == [12, 16, 20, -1]  # each got a second block
    sched.finish(seqs[1], "stop")
    sched.finish(seqs[2], "stop")
    sched.postprocess(out, [5, 5, 5])
    runner.launch(sched.schedule())
    assert backend.launches[-1][0] == "decode_b1"


def test_pending_tokens_are_fed_from_the_previous_launch():
    backend, runner, sched = setup()
    a, b = seq(0, 4), seq(1, 6)
    sched.add(a), sched.add(b)
    first = runner.launch(sched.schedule())
    runner.launch(sched.schedule())  # a and b decode tokens that are still PENDING
    assert backend.launches[-1][1] == [(0, 0), (1, 1)]
    assert len(runner.wait(first)) == 2


class Recording(np.ndarray):
    def __setitem__(self, key, value):
        self.writes.append(key)
        super().__setitem__(key, value)


def test_block_table_rows_are_written_once_then_appended():
    backend, runner, sched = setup()
    s = seq(0, 3)
    sched.add(s)
    out = sched.schedule()
    sched.postprocess(out, runner.wait(runner.launch(out)))
    tables = backend.inputs("decode_b1")["block_tables"].view(Recording)
    tables.writes = []
    backend._inputs["decode_b1"]["block_tables"] = tables
    for _ in range(6):  # positions 3..8: a second block at 4, a third at 8
        out = sched.schedule()
        sched.postprocess(out, runner.wait(runner.launch(out)))
    assert tables.writes == [(0, slice(None, 1)), (0, slice(1, 2)), (0, slice(2, 3))]
    assert tables[0, :3].tolist() == s.block_table


def test_a_row_the_plan_cannot_hold_names_its_request():
    _, runner, sched = setup()
    bad = seq(1, 3)
    object.__setattr__(bad.params, "temperature", 1e300)  # a value validation let through
    sched.add(seq(0, 3)), sched.add(bad)
    with pytest.raises(RowError) as e:
        runner.launch(sched.schedule())
    assert e.value.seqs == [bad]


def test_logits_for_scoring():
    backend, runner, sched = setup()
    s = seq(0, 10)
    sched.hold(s, 10)
    logits = runner.logits(s, 0, 10)
    assert logits.shape == (10, 50) and np.all(logits.sum(axis=1) == 1)
    sched.release(s)
    assert sched.block_manager.num_used_blocks == 0
