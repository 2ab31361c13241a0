"""Penalties, min_p, min_tokens, logit_bias, structured output and constrained tool calls over HTTP,
through the official openai client: bad values are 400s naming the field; good ones reach the engine
(fake) and change the output as asked (the real engine on the example model)."""

import json
from pathlib import Path

import openai
import pytest

from llmc.runtime.server import create_app
from serve_harness import FakeEngine, running_server

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("llguidance")

ZEN = Path(__file__).parents[2] / "examples" / "zen-llama"
CHAT = [{"role": "user", "content": "hi"}]
TEMPLATE = ("{% if tools %}{% for t in tools %}{{ t.function.name }}{% endfor %} <tool_call>{% endif %}"
            "{% for m in messages %}{{ m.content or '' }}\n{% endfor %}")
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"enum": ["Oslo", "Rome"]}}, "required": ["city"],
    "additionalProperties": False, "x-guidance": {"whitespace_flexible": False}}}}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def fake(serve):
    engine = FakeEngine(max_model_len=256, num_blocks=128)
    return engine, client(serve(engine).url)


def completion(c, **fields):
    extra = {k: fields.pop(k) for k in list(fields) if k in ("repetition_penalty", "min_p", "min_tokens", "guided_json",
                                                             "guided_regex", "guided_choice", "guided_grammar",
                                                             "response_format")}
    return c.completions.create(model="fake", prompt="hello", max_tokens=5, extra_body=extra or None, **fields)


@pytest.mark.parametrize("fields, param", [
    ({"presence_penalty": 2.5}, "presence_penalty"), ({"frequency_penalty": -3}, "frequency_penalty"),
    ({"repetition_penalty": 0}, "repetition_penalty"), ({"min_p": 1.5}, "min_p"), ({"min_tokens": 9}, "min_tokens"),
    ({"logit_bias": {"x": 1}}, "logit_bias"), ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"response_format": {"type": "xml"}}, "response_format"), ({"guided_regex": "(unclosed"}, "guided_regex"),
    ({"guided_choice": []}, "guided_choice"), ({"guided_json": "{not json"}, "guided_json"),
    ({"guided_regex": "a+", "guided_choice": ["a"]}, "guided_choice"),
])
def test_bad_values_are_refused_by_name(fake, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        completion(fake[1], **fields)
    assert caught.value.body["param"] == param, caught.value.body


def test_values_reach_the_engine(fake):
    engine, c = fake
    completion(c, presence_penalty=0.5, frequency_penalty=-0.5, logit_bias={"7": 3}, repetition_penalty=1.2, min_p=0.1,
               min_tokens=2, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
                   "type": "object"}}})
    p = engine.params[-1]
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty, p.min_p, p.min_tokens) == (0.5, -0.5, 1.2, 0.1, 2)
    assert p.logit_bias == ((7, 3.0),)
    assert (p.structured_output.kind, p.structured_output.value) == ("json_schema", {"type": "object"})
    completion(c, guided_choice=["a", "b"])
    assert engine.params[-1].structured_output.value == ["a", "b"]


# -- the real engine ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zen(tmp_path_factory):
    from llmc.runtime import Engine
    from zen_bundles import build_zen, one_torch_thread

    with one_torch_thread():
        engine = Engine.load(build_zen(tmp_path_factory.mktemp("serve_sampling") / "zen.llmc", max_batch_size=4,
                                       max_seq_len=256), device="cpu")
        with running_server(create_app(engine, model_name="zen", chat_template=TEMPLATE)) as served:
            yield client(served.url)
        engine.close()


SCHEMA = {"type": "object", "additionalProperties": False, "required": ["ok", "n"],
          "properties": {"ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]}}}


def test_json_schema_output_validates_over_seeds(zen):
    strict = {**SCHEMA, "x-guidance": {"whitespace_flexible": False}}
    for seed in range(6):
        r = zen.chat.completions.create(model="zen", messages=CHAT, max_tokens=40, seed=seed, temperature=1.0,
                                        response_format={"type": "json_schema",
                                                         "json_schema": {"name": "s", "schema": strict}})
        jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)


def test_guided_choice_logit_bias_and_penalties_change_the_output(zen):
    r = zen.completions.create(model="zen", prompt="Beautiful is", max_tokens=5, temperature=0,
                               extra_body={"guided_choice": ["Zen", "Python"]})
    assert r.choices[0].text in ("Zen", "Python")
    r = zen.completions.create(model="zen", prompt="Beautiful is", max_tokens=4, temperature=0, logit_bias={"77": 100})
    assert r.usage.completion_tokens == 4 and len(set(r.choices[0].text)) <= 2
    prompt = "Beautiful is better than ugly. Explicit is"
    plain = zen.completions.create(model="zen", prompt=prompt, max_tokens=20, temperature=0)
    penalised = zen.completions.create(model="zen", prompt=prompt, max_tokens=20, temperature=0,
                                       extra_body={"repetition_penalty": 3.0})
    assert plain.choices[0].text != penalised.choices[0].text


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_tool_choice_required_and_named_give_calls(zen, tool_choice):
    r = zen.chat.completions.create(model="zen", messages=CHAT, tools=[WEATHER], tool_choice=tool_choice,
                                    max_tokens=150, temperature=1.0, seed=3)
    calls = r.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "weather", r.choices[0]
    assert json.loads(calls[0].function.arguments)["city"] in ("Oslo", "Rome")
