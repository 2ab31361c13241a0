"""Rank 0 sends each worker only the step inputs a step uses: the dense ones, the live rows of the logit
edits, the bitmask rows bitmask_on reads. A worker's inputs then read as rank 0's in every row a step
uses, whatever earlier steps left in them, and a tensor-parallel engine samples what one rank does with
penalties, logit_bias and token masks before and after neutral steps."""

from __future__ import annotations

from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
from llmc.artifacts.plan_schema import INPUT_PADS, step_input_specs
from llmc.runtime.sparse_inputs import NEUTRAL, live_edits, masked_rows
from llmc.runtime.tensor_parallel.inputs import StepInputs, pack_inputs, unpack_inputs

QWEN3_VOCAB = 151936


def _views(rows: int, vocab: int = 211, max_blocks: int = 7) -> dict[str, np.ndarray]:
    """A decode plan's input arrays of `rows` rows, as a backend first hands them out."""
    specs = step_input_specs(rows, rows, rows, max_blocks, vocab)
    return {key: np.full(spec["shape"], INPUT_PADS.get(key, 0), spec["dtype"]) for key, spec in specs.items()}


def _message_bytes(views: dict) -> int:
    return len(ForkingPickler.dumps(("launch", "decode_b256", pack_inputs(views), [(i, i) for i in range(256)])))


def test_a_neutral_decode_step_sends_its_dense_inputs_only():
    views = _views(256, QWEN3_VOCAB, max_blocks=2048 // 16)
    dense = sum(v.nbytes for key, v in views.items() if key not in NEUTRAL)
    step = pack_inputs(views)
    assert (step.edits, step.masked, len(step.payload)) == (0, range(0), dense)
    assert _message_bytes(views) < 200_000  # every input: 7.6 MB
    views["bitmask_on"][100:103] = 1, 0, 1
    views["logit_edit_index"][:5] = 100, 7
    step = pack_inputs(views)
    row = views["allowed_bitmask"][0].nbytes
    assert (step.edits, step.masked, len(step.payload)) == (5, range(100, 103), dense + 5 * (8 + 12) + 3 * row)


def _write(views: dict, edits: int, masked: dict, rng) -> None:
    """A step as the runner writes it: new dense values, `edits` edits then -1 rows, and the bitmask
    rows of `masked` (row -> whether bitmask_on is set); other bitmask rows keep what they held."""
    for key, view in views.items():
        if key not in NEUTRAL and key != "bitmask_on":
            view[...] = rng.integers(0, 50, view.shape)
    rows = len(views["bitmask_on"])
    views["logit_edit_index"][:edits] = np.stack([rng.integers(0, rows, edits), rng.integers(0, 211, edits)], 1)
    views["logit_edit_index"][edits:] = -1
    views["logit_edit_values"][:edits] = rng.normal(size=(edits, 3))
    views["logit_edit_values"][edits:] = 0.0
    views["bitmask_on"][:] = 0
    for row, on in masked.items():
        views["allowed_bitmask"][row] = rng.integers(-(2**31), 2**31 - 1, views["allowed_bitmask"].shape[1])
        views["bitmask_on"][row] = on


# (edits, masked rows): before, between and after neutral steps; fewer edits than the step before
STEPS = [(0, {}), (40, {}), (0, {}), (3, {1: 1, 2: 0, 4: 1}), (0, {}), (25, {6: 1}), (7, {}), (0, {}), (30, {0: 1})]


def test_a_worker_reads_rank0s_inputs_in_every_row_a_step_uses():
    """The worker alternates two sets of input arrays, as a GPU backend's pinned slots do."""
    rng = np.random.default_rng(0)
    sender, slots = _views(8), [_views(8), _views(8)]
    for i, (edits, masked) in enumerate(STEPS):
        _write(sender, edits, masked, rng)
        receiver = slots[i % 2]
        unpack_inputs(pack_inputs(sender), receiver)
        assert live_edits(receiver["logit_edit_index"]) == edits
        for key, view in sender.items():
            used = range(edits) if key in ("logit_edit_index", "logit_edit_values") else (
                masked_rows(sender["bitmask_on"]) if key == "allowed_bitmask" else range(len(view)))
            np.testing.assert_array_equal(receiver[key][used.start:used.stop], view[used.start:used.stop], err_msg=key)
        np.testing.assert_array_equal(receiver["logit_edit_index"], sender["logit_edit_index"])  # -1 after the edits


def test_a_payload_of_another_plan_is_refused():
    step = pack_inputs(_views(4))
    with pytest.raises(ValueError, match="this rank's plan holds"):
        unpack_inputs(StepInputs(step.payload + b"\0" * 4, 0, range(0)), _views(4))


# -- through the engine: two cpu ranks over gloo against one -------------------------------------------------


@pytest.fixture(scope="module")
def zen(tmp_path_factory):
    pytest.importorskip("transformers")
    from zen_bundles import build_zen

    root = tmp_path_factory.mktemp("tp_sparse")
    for n in (1, 2):
        build_zen(root / f"zen-tp{n}.llmc", use_cache=False, tensor_parallel_size=n, max_batch_size=4, max_seq_len=128)
    return root


def _rounds():
    """Three generate calls on one engine. Penalties and masks turn overlap off while they run, so a worker's
    tokens are fed back only in the neutral steps after them: in the first round, the penalised row ends
    while three plain rows go on in the same plan, which its worker must then run without edits."""
    from llmc.runtime import SamplingParams
    from llmc.runtime.structured_output import Constraint

    plain = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    penalised = SamplingParams(max_tokens=6, temperature=1.0, seed=3, repetition_penalty=1.5, presence_penalty=1.0,
                               min_tokens=4, logit_bias={300: 8.0, 274: -5.0}, ignore_eos=True)
    regex = Constraint("regex", r"[0-9]{2}-[a-c]{2}")
    masked = [SamplingParams(max_tokens=20, temperature=1.0, seed=s, structured_output=regex) for s in (1, 2)]
    prompts = ["Beautiful is better than ugly. Explicit is", "Simple is better", "Flat is", "Errors should"]
    return [(prompts, [penalised, plain, plain, plain]), (prompts[1:], [masked[0], plain, masked[1]]),
            (prompts[:1], [plain])]


def _record_sizes(workers, sizes: list) -> None:
    """Append the bytes of each decode step's message to the workers to `sizes`."""
    send = workers.send

    def recording(message):
        if message[0] == "launch" and message[1].startswith("decode"):
            sizes.append(len(ForkingPickler.dumps(message)))
        send(message)

    workers.send = recording


def _outputs(bundle, sizes: list | None = None):
    from llmc.runtime import Engine

    engine = Engine.load(bundle, device="cpu")
    try:
        if sizes is not None:
            _record_sizes(engine.backend.workers, sizes)
        tokens = [[c.token_ids for c in engine.generate(prompts, params)] for prompts, params in _rounds()]
        return tokens, engine.score(engine.tokenizer.encode("Now is better than never."))
    finally:
        engine.close()


def test_two_ranks_sample_what_one_does_with_edits_and_masks(zen):
    pytest.importorskip("llguidance")
    sizes = []
    tokens, logits = _outputs(zen / "zen-tp1.llmc")
    tp_tokens, tp_logits = _outputs(zen / "zen-tp2.llmc", sizes)
    assert tp_tokens == tokens
    np.testing.assert_allclose(tp_logits, logits, rtol=0, atol=1e-5 * max(float(np.abs(logits).max()), 1.0))
    assert max(sizes) < 1_000  # all of the edit arrays alone: 164 KB a step
    assert max(sizes) - min(sizes) > 2 * 48, "no step carried edits or bitmask rows"
