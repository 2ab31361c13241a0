"""The sparse inputs (logit edits, token bitmask) on the cuda backend against the fake driver: a step
copies the dense inputs and only the sparse rows it uses, and a step without edits after one with
them sees none (the device's edit rows are reset, not left from the step before)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_cuda import BLOCK, V, bundle, fake_driver, step_inputs, write_fake_bundle  # noqa: F401  (fixture)
from llmc.artifacts import Bundle
from llmc.runtime.backends.cuda import CudaBackend
from llmc.runtime.backends.cuda_memory import input_offsets
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.runner import ModelRunner
from llmc.runtime.sampler import Sampler
from llmc.runtime.sampling_params import SamplingParams
from llmc.runtime.scheduler import Scheduler
from llmc.runtime.sequence import Sequence
from llmc.runtime.sparse_inputs import last_edit, live_edits, masked_rows

SPARSE = ("logit_edit_index", "logit_edit_values", "allowed_bitmask")
EDITS = [(0, 4, 1.0, 2.0, 0.0), (1, 7, 1.0, 0.0, -1.0), (1, 10, 1.0, 0.0, -np.inf)]  # row, token, scale, bias, add


@pytest.fixture
def edits_bundle(tmp_path):
    write_fake_bundle(tmp_path / "e.llmc", edits=True)
    with Bundle.open(tmp_path / "e.llmc") as b:
        yield b


def write_step(views: dict, plan: dict, edits=(), masked=None) -> None:
    """decode_b2's inputs for ids 3 and 9 (tokens 4 and 10), as the runner writes them: `edits` in the
    leading rows of the edit list, -1 after them; `masked`: row -> the tokens it allows."""
    for key, value in step_inputs(plan, [3, 9], [5, 17]).items():
        views[key][...] = value
    for i, (row, token, *values) in enumerate(edits):
        views["logit_edit_index"][i] = row, token
        views["logit_edit_values"][i] = values
    for row, tokens in (masked or {}).items():
        views["bitmask_on"][row] = 1
        views["allowed_bitmask"][row] = sum(1 << t for t in tokens)  # V = 16: one word


def device_edit_rows(fake, state) -> np.ndarray:
    rows = state.views["logit_edit_index"].shape[0]
    raw = fake.read(state.dev_inputs + state.offsets["logit_edit_index"], 8 * rows)
    return np.frombuffer(raw, np.int32).reshape(rows, 2)


def test_a_step_copies_the_dense_inputs_and_only_the_sparse_rows_it_uses(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan, state = bundle.plan("decode_b2"), backend.plans["decode_b2"]
        assert state.dense_bytes * 40 < input_offsets(plan)[1]  # the edit list (8192 rows) is most of the block
        inputs = step_inputs(plan, [3, 9], [5, 17])
        fake.htod.clear()
        backend.run(plan, inputs, False)
        backend.run(plan, {k: v for k, v in inputs.items() if k not in SPARSE}, False)  # left out: the same
        assert fake.htod == [state.dense_bytes] * 2

        views = {key: value.copy() for key, value in inputs.items()}
        write_step(views, plan, EDITS)
        fake.htod.clear()
        backend.run(plan, views, False)
        assert fake.htod == [state.dense_bytes, 3 * 8, 3 * 12]  # three rows of the index and of the values
        assert device_edit_rows(fake, state)[:4].tolist() == [[0, 4], [1, 7], [1, 10], [-1, -1]]

        fake.calls.clear()
        fake.htod.clear()
        backend.run(plan, inputs, False)  # no edits: the device's three rows are reset to -1, no copy
        assert fake.htod == [state.dense_bytes] and fake.calls.count("cuMemsetD8Async") == 1
        assert (device_edit_rows(fake, state) == -1).all()

        write_step(views, plan, masked={1: [2, 3]})
        fake.htod.clear()
        backend.run(plan, views, False)
        assert fake.htod == [state.dense_bytes, 4]  # row 1 of the bitmask (one word)


def test_the_runner_protocol_copies_what_each_slot_uses(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan, state = bundle.plan("decode_b2"), backend.plans["decode_b2"]
        fake.htod.clear()
        for edits in (EDITS, (), EDITS[:1], ()):  # alternate pinned slots
            write_step(backend.inputs("decode_b2"), plan, edits)
            backend.wait(backend.launch("decode_b2", [], False))
        assert fake.htod == [state.dense_bytes, 24, 36, state.dense_bytes, state.dense_bytes, 8, 12, state.dense_bytes]
        assert (device_edit_rows(fake, state) == -1).all()


def test_a_step_without_edits_after_one_with_them_sees_none(edits_bundle):
    fake = fake_driver()
    with CudaBackend.open(edits_bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan = edits_bundle.plan("decode_b2")

        def step(edits=(), masked=None):  # through the runner's protocol, slots alternating
            write_step(backend.inputs("decode_b2"), plan, edits, masked)
            return backend.wait(backend.launch("decode_b2", [], True))[1]

        plain = step()
        assert plain.tolist() == np.eye(V)[[4, 10]].tolist()
        edited = step(EDITS)
        want = plain.copy()
        want[0, 4], want[1, 7], want[1, 10] = 3.0, -1.0, -np.inf
        assert edited.tolist() == want.tolist()
        assert step().tolist() == plain.tolist()
        masked = step(EDITS[:1], masked={0: [4, 5]})
        assert masked[0].tolist() == [-np.inf] * 4 + [3.0, 0.0] + [-np.inf] * 10  # tokens 4, 5 allowed; 4 edited
        assert masked[1].tolist() == plain[1].tolist()
        assert step().tolist() == plain.tolist()
        assert step().tolist() == plain.tolist()

        views = step_inputs(plan, [3, 9], [5, 17])
        write_step(views, plan, EDITS)
        assert backend.run(plan, views, True)[1].tolist() == edited.tolist()
        left_out = {k: v for k, v in step_inputs(plan, [3, 9], [5, 17]).items() if k not in SPARSE}
        assert backend.run(plan, left_out, True)[1].tolist() == plain.tolist()


def test_scoring_after_a_biased_step_sees_no_bias(edits_bundle):
    """The runner end to end: a prefill step with a logit_bias edit, then scoring through the same plan."""
    fake = fake_driver()
    with CudaBackend.open(edits_bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plans = {name: edits_bundle.plan(name) for name in edits_bundle.plans()}
        runner = ModelRunner(backend, plans, BLOCK, Sampler(V))
        sched = Scheduler(BlockManager(8, BLOCK), 2, 8, 16)
        seq = Sequence(0, "r0", [3, 4, 5], SamplingParams(max_tokens=4, temperature=0.0, logit_bias={7: 3.0}))
        sched.add(seq)
        assert runner.wait(runner.launch(sched.schedule())) == [6]
        state = backend.plans["prefill_t8"]
        assert device_edit_rows(fake, state)[:2].tolist() == [[0, 7], [-1, -1]]
        assert runner.logits(seq, 0, 3).tolist() == np.eye(V)[[4, 5, 6]].tolist()
        assert (device_edit_rows(fake, state) == -1).all()


def test_run_refuses_to_leave_out_a_sparse_input_the_step_reads(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=8) as backend:
        plan = bundle.plan("decode_b2")
        masked = step_inputs(plan, [3, 9], [5, 17])
        masked["bitmask_on"][0] = 1
        del masked["allowed_bitmask"]
        with pytest.raises(ValueError, match="'allowed_bitmask' is missing; bitmask_on sets rows"):
            backend.run(plan, masked, False)
        no_values = step_inputs(plan, [3, 9], [5, 17])
        del no_values["logit_edit_values"]
        with pytest.raises(ValueError, match="'logit_edit_values' is missing"):
            backend.run(plan, no_values, False)


@pytest.mark.parametrize("rows, live, last", [([], 0, 0), ([0], 1, 1), ([2, 0, 1], 3, 3), ([1] * 13, 13, 13)])
def test_the_edits_in_use_are_found_by_bisection(rows, live, last):
    index = np.full((37, 2), -1, np.int32)
    index[: len(rows), 0] = rows
    assert live_edits(index) == live and last_edit(index) == last
    index[30] = 0, 5  # not the runner's layout: only last_edit, for inputs from outside, sees it
    assert live_edits(index) == live and last_edit(index) == 31


def test_the_masked_rows_run_from_the_first_to_the_last_set():
    assert masked_rows(np.array([0, 0, 0])) == range(0)
    assert masked_rows(np.array([0, 1, 0, 1, 0])) == range(1, 4)
