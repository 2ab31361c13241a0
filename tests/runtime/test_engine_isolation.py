"""A step's failure fails only the requests that caused it; the engine stays healthy."""

import pytest
from fake_model import FakeModelBackend, fake_bundle
from llmc.errors import UserError
from llmc.runtime import Engine, SamplingParams

GREEDY = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)


def past_validation(**kw) -> SamplingParams:
    """Params with a temperature no float32 holds, as if a check were missing: the step must fail
    this request alone."""
    params = SamplingParams(**kw)
    object.__setattr__(params, "temperature", 1e300)
    return params


def drain(engine):
    outputs = {}
    while engine.has_unfinished():
        for out in engine.step():
            outputs.setdefault(out.request_id, []).append(out)
    return outputs


@pytest.mark.parametrize("overlap", [False, True])
def test_a_request_the_plan_cannot_hold_fails_alone(overlap):
    bundle = fake_bundle()
    engine = Engine(bundle, FakeModelBackend(bundle, 64), overlap=overlap)
    engine.add_request("good", [3, 4, 5], GREEDY)
    engine.add_request("bad", [3, 4, 5], past_validation(max_tokens=5))
    outputs = drain(engine)
    assert outputs["bad"][-1].finish_reason == "error" and "float32" in outputs["bad"][-1].error
    assert outputs["good"][-1].finish_reason == "length" and outputs["good"][-1].num_output_tokens == 5
    assert engine.block_manager.num_used_blocks == 0 and engine.stats()["num_running"] == 0
    assert engine.generate([[7, 8]], GREEDY)[0].finish_reason == "length"  # still healthy


class FlakyBackend(FakeModelBackend):
    fail_next = False

    def launch(self, name, feed, want_logits):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("device fault")
        return super().launch(name, feed, want_logits)


@pytest.mark.parametrize("overlap", [False, True])
def test_a_backend_failure_fails_that_step_and_the_engine_goes_on(overlap):
    bundle = fake_bundle()
    backend = FlakyBackend(bundle, 64)
    engine = Engine(bundle, backend, overlap=overlap)
    engine.add_request("a", [3, 4, 5], GREEDY)
    backend.fail_next = True
    outputs = drain(engine)
    assert outputs["a"][-1].finish_reason == "error" and "device fault" in outputs["a"][-1].error
    assert engine.block_manager.num_used_blocks == 0
    alone = Engine(bundle, FakeModelBackend(bundle, 64)).generate([[3, 4, 5]], GREEDY)[0].token_ids
    assert engine.generate([[3, 4, 5]], GREEDY)[0].token_ids == alone


def test_generate_raises_for_a_failed_request_and_leaves_nothing_behind():
    bundle = fake_bundle()
    engine = Engine(bundle, FakeModelBackend(bundle, 64))
    with pytest.raises(UserError, match="failed"):
        engine.generate([[3, 4], [5, 6]], [GREEDY, past_validation()])
    assert not engine.has_unfinished() and engine.block_manager.num_used_blocks == 0


def test_score_holds_blocks_through_the_scheduler():
    bundle = fake_bundle()
    engine = Engine(bundle, FakeModelBackend(bundle, 64))
    engine.add_request("a", [3, 4, 5], GREEDY)
    engine.step()
    logits = engine.score(list(range(2, 22)))
    assert logits.shape == (20, 50) and engine.scheduler.held == []
    outputs = drain(engine)
    assert outputs["a"][-1].num_output_tokens == 5


def test_a_request_whose_text_cannot_be_made_fails_alone():
    bundle = fake_bundle()
    engine = Engine(bundle, FakeModelBackend(bundle, 64))
    decode = engine.outputs.decode
    engine.outputs.decode = lambda ids: decode(ids) if 3 not in ids else 1 / 0  # the request whose prompt holds 3
    engine.add_request("bad", [3, 4], GREEDY)
    engine.add_request("good", [5, 6], GREEDY)
    outputs = drain(engine)
    assert outputs["bad"][-1].finish_reason == "error" and "ZeroDivisionError" in outputs["bad"][-1].error
    assert outputs["good"][-1].finish_reason == "length" and engine.block_manager.num_used_blocks == 0
