"""Log probabilities through the cpu engine's plans, against log_softmax of the engine's own logits.

Generated tokens (logprobs) and prompt tokens (prompt_logprobs), alone and batched with other
requests, with prefix caching on and off, with a prompt longer than a step's logits rows (its
prefill is chunked by rows) and with preemption (prompt logprobs are reported once).
"""


import numpy as np
import pytest
import torch

from llmc.errors import UserError
from llmc.runtime import Engine, SamplingParams
from zen_bundles import build_zen, one_torch_thread

PROMPT = "Beautiful is better than ugly. Explicit is better than implicit. Simple is"
TOL = 1e-4


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    with one_torch_thread():
        yield build_zen(tmp_path_factory.mktemp("logprobs") / "zen.llmc", use_cache=False, max_batch_size=4,
                        max_seq_len=128)


@pytest.fixture(scope="module", params=[True, False], ids=["prefix-caching", "no-prefix-caching"])
def engine(bundle, request):
    engine = Engine.load(bundle, device="cpu", enable_prefix_caching=request.param)
    yield engine
    engine.close()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.from_numpy(logits).float(), dim=-1).numpy()


def check_entry(entry, lp_row: np.ndarray, token: int, top: int, what: str) -> None:
    assert entry.token_id == token, what
    assert abs(entry.logprob - lp_row[token]) <= TOL, f"{what}: {entry.logprob} vs {lp_row[token]}"
    order = np.argsort(-lp_row, kind="stable")[:top]
    assert [t for t, _ in entry.top] == order.tolist(), what
    np.testing.assert_allclose([v for _, v in entry.top], lp_row[order], atol=TOL, err_msg=what)


def check(engine, completion, params: SamplingParams) -> None:
    prompt, out = completion.prompt_token_ids, completion.token_ids
    lp = log_softmax(engine.score(prompt + out[:-1]))
    if params.logprobs is not None:
        assert len(completion.logprobs) == len(out)
        for i, (entry, token) in enumerate(zip(completion.logprobs, out)):
            check_entry(entry, lp[len(prompt) - 1 + i], token, params.logprobs, f"output token {i}")
    else:
        assert completion.logprobs is None
    if params.prompt_logprobs is not None:
        assert len(completion.prompt_logprobs) == len(prompt) and completion.prompt_logprobs[0] is None
        for j in range(1, len(prompt)):
            check_entry(completion.prompt_logprobs[j], lp[j - 1], prompt[j], params.prompt_logprobs,
                        f"prompt token {j}")
    else:
        assert completion.prompt_logprobs is None


def test_generated_and_prompt_logprobs_alone(engine):
    params = SamplingParams(max_tokens=6, temperature=0.0, logprobs=5, prompt_logprobs=3)
    [completion] = engine.generate(PROMPT, params)
    assert len(completion.prompt_token_ids) > 8  # more prompt rows than a step has: chunked by rows
    check(engine, completion, params)


def test_logprobs_zero_and_max(engine):
    for params in (SamplingParams(max_tokens=3, temperature=0.8, seed=3, logprobs=0),
                   SamplingParams(max_tokens=3, temperature=0.8, seed=4, logprobs=20, prompt_logprobs=20)):
        [completion] = engine.generate("Now is better", params)
        check(engine, completion, params)
        assert all(len(e.top) == params.logprobs for e in completion.logprobs)


def test_batched_with_other_requests(engine):
    prompts = [PROMPT, "Flat is better", "Errors should never", PROMPT + " better", "Now is better than never."]
    params = [SamplingParams(max_tokens=5, temperature=0.0, logprobs=2, prompt_logprobs=1),
              SamplingParams(max_tokens=7, temperature=0.9, seed=1),
              SamplingParams(max_tokens=4, temperature=0.7, seed=2, logprobs=4),
              SamplingParams(max_tokens=3, temperature=0.0, prompt_logprobs=0),
              SamplingParams(max_tokens=6, temperature=1.0, seed=5, logprobs=1, prompt_logprobs=2)]
    batched = engine.generate(prompts, params)
    for completion, p in zip(batched, params):
        check(engine, completion, p)
    alone = [engine.generate(prompt, p)[0] for prompt, p in zip(prompts, params)]
    assert [c.token_ids for c in alone] == [c.token_ids for c in batched]


def test_prompt_logprobs_once_under_preemption(bundle):
    engine = Engine.load(bundle, device="cpu", num_kv_blocks=9)
    try:
        params = [SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, logprobs=1, prompt_logprobs=1)] * 3
        completions = engine.generate([PROMPT, PROMPT + " Flat", "Flat is better than nested."], params)
        assert engine.scheduler.num_preemptions > 0
        for completion, p in zip(completions, params):
            check(engine, completion, p)
    finally:
        engine.close()


@pytest.mark.parametrize("field,value", [("logprobs", 21), ("prompt_logprobs", -1), ("logprobs", 1.5)])
def test_out_of_range_is_one_line(field, value):
    with pytest.raises(UserError, match=field):
        SamplingParams(**{field: value})


def test_a_prompt_logprobs_prefill_is_chunked_by_logits_rows():
    from llmc.runtime.block_manager import BlockManager
    from llmc.runtime.scheduler import Scheduler
    from llmc.runtime.sequence import Sequence

    scheduler = Scheduler(BlockManager(64, 4, enable_prefix_caching=True), 4, 64, 256, max_num_logits=4)
    wants = Sequence(0, "a", list(range(2, 13)), SamplingParams(max_tokens=2, prompt_logprobs=1))
    plain = Sequence(1, "b", list(range(2, 30)), SamplingParams(max_tokens=2))
    scheduler.add(wants)
    scheduler.add(plain)
    steps = []
    while (out := scheduler.schedule()) is not None:
        assert out.num_logits <= 4
        steps.append(dict(zip((s.seq_id for s in out.seqs), out.num_new_tokens)))
        for seq, n, start in zip(out.seqs, out.num_new_tokens, out.starts):
            seq.num_prompt_logprobs = max(seq.num_prompt_logprobs, seq.prompt_logprob_positions(start, start + n).stop)
        scheduler.postprocess(out, [5 if i >= 0 else None for i in out.sample_indices])
    # 10 prompt rows and a sample in rows of 4 (then its one decode); beside it the plain prompt computes
    # all but its last token, whose sample needs a row, which the third step has
    assert [s[0] for s in steps if 0 in s] == [4, 4, 3, 1]
    assert steps[:3] == [{0: 4, 1: 27}, {0: 4}, {0: 3, 1: 1}]
