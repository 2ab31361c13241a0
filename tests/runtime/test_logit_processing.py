"""Penalties, logit_bias, min_tokens, min_p and structured output through the cpu engine's plans.

The oracle: the engine's own logits for the same history (`score`), edited by a direct numpy
computation of vLLM's rules, then the sample op's native function with the same uniform draw.
"""

import json

import numpy as np
import pytest
import torch

from llmc.aot.ir import OPS
from llmc.runtime import Engine, SamplingParams
from llmc.runtime.sampling_params import uniform_draw
from zen_bundles import build_zen, one_torch_thread

EOS = 1
PROMPT = "Beautiful is better than ugly. Explicit is"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    with one_torch_thread():
        yield build_zen(tmp_path_factory.mktemp("logit_processing") / "zen.llmc", max_batch_size=4, max_seq_len=128)


@pytest.fixture(scope="module")
def engine(bundle):
    engine = Engine.load(bundle, device="cpu")
    yield engine
    engine.close()


def edited(logits: np.ndarray, prompt: list[int], outputs: list[int], p: SamplingParams) -> np.ndarray:
    """vLLM's order: logit_bias, min_tokens ban, repetition penalty, frequency and presence penalties."""
    x = logits.astype(np.float32).copy()
    for token, bias in p.logit_bias:
        x[token] += np.float32(bias)
    if len(outputs) < p.min_tokens:
        x[EOS] = -np.inf
    seen = np.zeros(len(x), bool)
    seen[prompt + outputs] = True
    rep = np.float32(p.repetition_penalty)
    x[seen] = np.where(x[seen] > 0, x[seen] / rep, x[seen] * rep)
    counts = np.bincount(np.asarray(outputs, dtype=np.int64), minlength=len(x)).astype(np.float32)
    x -= np.float32(p.frequency_penalty) * counts + np.float32(p.presence_penalty) * (counts > 0)
    return x


def oracle(engine, prompt: list[int], p: SamplingParams, seed: int, count: int) -> list[int]:
    outputs = []
    for i in range(count):
        logits = engine.score(prompt + outputs)[-1]
        x = torch.from_numpy(edited(logits, prompt, outputs, p))[None]
        args = (torch.tensor([p.temperature]), torch.tensor([p.top_k], dtype=torch.int32), torch.tensor([p.top_p]),
                torch.tensor([p.min_p]), torch.tensor([uniform_draw(seed, i) if p.temperature > 0 else 0.0]))
        outputs.append(int(OPS["sample"].native(x, *args)[0]))
    return outputs


PENALTIES = [  # each changes this prompt's output (the zen model's top logit leads by about 8)
    dict(repetition_penalty=3.0),
    dict(repetition_penalty=0.5, temperature=1.5),
    dict(presence_penalty=2.0, frequency_penalty=2.0, temperature=1.5),
    dict(frequency_penalty=-2.0, temperature=2.0, min_p=0.1),
    dict(logit_bias={300: 9.0, 274: -5.0}, repetition_penalty=1.5, presence_penalty=1.0, temperature=1.0),
]


@pytest.mark.parametrize("kw", PENALTIES, ids=lambda kw: ",".join(kw))
def test_penalties_match_numpy(engine, kw):
    base = {"max_tokens": 24, "temperature": 0.0, "ignore_eos": True, "seed": 5}
    p = SamplingParams(**{**base, **kw})
    prompt = engine.tokenizer.encode(PROMPT)
    got = engine.generate([prompt], p)[0].token_ids
    assert got == oracle(engine, prompt, p, 5, len(got))
    plain = {**base, "temperature": kw.get("temperature", 0.0)}
    assert got != engine.generate([prompt], SamplingParams(**plain))[0].token_ids, "the case tests nothing"


def test_logit_bias_forces_a_token(engine):
    out = engine.generate([PROMPT], SamplingParams(max_tokens=6, temperature=1.0, seed=1, logit_bias={77: 100}))[0]
    assert out.token_ids == [77] * 6


def test_min_tokens_delays_eos(engine):
    force_eos = {EOS: 100.0}
    early = engine.generate([PROMPT], SamplingParams(max_tokens=10, temperature=0.0, logit_bias=force_eos))[0]
    assert early.token_ids == [EOS] and early.finish_reason == "stop"
    late = engine.generate([PROMPT], SamplingParams(max_tokens=10, temperature=0.0, logit_bias=force_eos,
                                                    min_tokens=4))[0]
    assert len(late.token_ids) == 5 and EOS not in late.token_ids[:4] and late.token_ids[4] == EOS


def test_same_output_alone_batched_and_without_overlap(bundle, engine):
    prompts = [PROMPT, "Simple is better", "Flat is", "Errors should"]
    params = [SamplingParams(max_tokens=10, temperature=0.9, seed=s, repetition_penalty=1.2, frequency_penalty=0.4,
                             ignore_eos=True) for s in range(4)]
    batched = [c.token_ids for c in engine.generate(prompts, params)]
    alone = [engine.generate([pr], p)[0].token_ids for pr, p in zip(prompts, params)]
    assert batched == alone
    serial = Engine.load(bundle, device="cpu", overlap=False)
    try:
        assert [c.token_ids for c in serial.generate(prompts, params)] == batched
    finally:
        serial.close()


def test_penalised_and_constrained_outputs_survive_preemption(bundle, engine):
    prompts = [PROMPT, "Simple is better", "Flat is", "Errors should"]
    params = [SamplingParams(max_tokens=30, temperature=0.9, seed=s, repetition_penalty=1.3, presence_penalty=0.5,
                             min_tokens=5, logit_bias=((7, 2.0),), ignore_eos=True) for s in range(4)]
    alone = [engine.generate([pr], p)[0].token_ids for pr, p in zip(prompts, params)]
    tight = Engine.load(bundle, device="cpu", num_kv_blocks=6)  # 96 tokens of KV for 4 sequences of up to ~40
    try:
        together = [c.token_ids for c in tight.generate(prompts, params)]
        assert tight.scheduler.num_preemptions > 0, "the pool was meant to force preemption"
    finally:
        tight.close()
    assert together == alone


# whitespace between tokens is fixed: the zen model, which never saw JSON, would pad it without end
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["zen", "n", "tag"],
          "properties": {"zen": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}, "tag": {"type": "string", "maxLength": 6}},
          "x-guidance": {"whitespace_flexible": False}}


def test_structured_output_validates_over_many_seeds(engine):
    pytest.importorskip("llguidance")
    jsonschema = pytest.importorskip("jsonschema")
    from llmc.runtime.structured_output import Constraint

    params = [SamplingParams(max_tokens=60, temperature=1.0, seed=s, structured_output=Constraint("json_schema", SCHEMA))
              for s in range(12)]
    outs = engine.generate([PROMPT] * len(params), params)
    for out in outs:
        assert out.finish_reason == "stop", out.text
        jsonschema.validate(json.loads(out.text), {k: v for k, v in SCHEMA.items() if k != "x-guidance"})
    assert len({o.text for o in outs}) > 1


def test_structured_choice_and_regex_with_greedy_and_penalties(engine):
    pytest.importorskip("llguidance")
    from llmc.runtime.structured_output import Constraint

    choice = SamplingParams(max_tokens=20, temperature=0.0, structured_output=Constraint("choice", ["yes", "no"]))
    assert engine.generate([PROMPT], choice)[0].text in ("yes", "no")
    regex = SamplingParams(max_tokens=20, temperature=1.0, seed=2, repetition_penalty=1.5,
                           structured_output=Constraint("regex", r"[0-9]{2}-[a-c]{2}"))
    text = engine.generate([PROMPT], regex)[0].text
    assert len(text) == 5 and text[:2].isdigit() and text[2] == "-" and set(text[3:]) <= set("abc")


def test_logit_bias_outside_the_vocabulary_is_refused(engine):
    from llmc.errors import UserError

    with pytest.raises(UserError, match="logit_bias token id 384"):
        engine.add_request("x", PROMPT, SamplingParams(logit_bias={384: 1.0}))


def test_the_cpu_backend_takes_left_out_sparse_inputs_as_neutral(bundle):
    from llmc.artifacts import Bundle
    from llmc.runtime.backends.cpu import CpuBackend
    from llmc.runtime.batch import StepBatch, fill_inputs
    from llmc.runtime.sparse_inputs import NEUTRAL

    with Bundle.open(bundle) as b:
        backend = CpuBackend.open(b, num_kv_blocks=2)
        plan = b.plan("decode_b1")
        batch = StepBatch("decode")
        batch.add_piece([5], 0, [0], 16)
        batch.add_row(0, SamplingParams(temperature=0.0), 0, 0)
        inputs = fill_inputs(plan, batch)
        assert not set(NEUTRAL) & set(inputs)  # a fixed batch writes none of them
        tokens, logits = backend.run(plan, inputs, True)
        assert tokens.tolist() == [logits[0].argmax()] and logits[0].argmax() != 7
        neutral = {key: np.full(plan["inputs"][key]["shape"], value, plan["inputs"][key]["dtype"])
                   for key, value in NEUTRAL.items()}
        assert backend.run(plan, inputs | neutral, False)[0].tolist() == tokens.tolist()
        neutral["logit_edit_index"][0] = 0, 7
        neutral["logit_edit_values"][0] = 1.0, 100.0, 0.0
        assert backend.run(plan, inputs | neutral, False)[0].tolist() == [7]
        backend.close()
