"""Tool calling for chat over HTTP: tools rendered by the template, Hermes `<tool_call>` output parsed."""

import json

import openai
import pytest

from serve_harness import FakeEngine

TEMPLATE = (
    "{% if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
    " Answer with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>\n{% endif %}"
    "{% for m in messages %}{{ m.role }}: {{ m.content or '' }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
WEATHER = {"type": "function", "function": {"name": "weather", "description": "Forecast", "parameters": CITY}}
CALLS = ('Let me check.\n<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
         '<tool_call>{"name": "weather", "arguments": {"city": "Rome"}}</tool_call>\n')
ASK = [{"role": "user", "content": "Weather in Oslo and Rome?"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def serve_script(serve, script: str, template: str = TEMPLATE):
    engine = FakeEngine(max_model_len=1024, num_blocks=512, script=script)
    return engine, serve(engine, chat_template=template).url


def rendered(engine) -> str:
    return "".join(map(chr, engine.prompts[-1]))


def test_calls_are_parsed_from_the_output(serve):
    engine, url = serve_script(serve, CALLS)
    response = client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], max_tokens=500)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("weather", {"city": "Oslo"}), ("weather", {"city": "Rome"})]
    assert all(c.type == "function" and c.id.startswith("call_") for c in choice.message.tool_calls)
    assert '<tools>{"type": "function", "function": {"name": "weather"' in rendered(engine)


def test_calls_are_streamed_whole(serve):
    _, url = serve_script(serve, CALLS)
    chunks = list(client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], max_tokens=500,
                                                      stream=True, tool_choice="auto"))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [call for c in chunks for call in c.choices[0].delta.tool_calls or []]
    assert content == "Let me check."
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "weather", {"city": "Oslo"}), (1, "weather", {"city": "Rome"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
def test_output_without_calls_is_plain_content(serve, stream):
    _, url = serve_script(serve, "  Sunny, <tool_ca no call.\n")
    response = client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], max_tokens=500,
                                                   stream=stream)
    if stream:
        chunks = list(response)
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "  Sunny, <tool_ca no call.\n"
        assert chunks[-1].choices[0].finish_reason == "stop"
    else:
        assert response.choices[0].message.content == "  Sunny, <tool_ca no call.\n"
        assert response.choices[0].message.tool_calls is None and response.choices[0].finish_reason == "stop"


def test_tool_choice_none_renders_no_tools_and_parses_nothing(serve):
    engine, url = serve_script(serve, CALLS)
    response = client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], tool_choice="none",
                                                   max_tokens=500)
    assert response.choices[0].message.content == CALLS and response.choices[0].finish_reason == "stop"
    assert "<tools>" not in rendered(engine)


def test_earlier_calls_reach_the_template_with_object_arguments(serve):
    engine, url = serve_script(serve, "It is sunny.")
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    response = client(url).chat.completions.create(model="fake", messages=history, tools=[WEATHER], max_tokens=500)
    assert response.choices[0].message.content == "It is sunny."
    assert '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>' in rendered(engine)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "weather"}}])
def test_constrained_choices_constrain_the_output_to_calls(serve, tool_choice):
    engine, url = serve_script(serve, CALLS)
    client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], tool_choice=tool_choice,
                                        max_tokens=500)
    constraint = engine.params[-1].structured_output
    assert constraint.kind == "grammar" and '"<tool_call>\\n"' in constraint.value
    assert ("call+" in constraint.value) == (tool_choice == "required")


@pytest.mark.parametrize("template, words", [
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "renders no tools"),
    ("[TOOL_CALLS]{% for m in messages %}{{ m.content }}{% endfor %}", "mistral tool-call format"),
])
def test_templates_without_hermes_calls_are_refused(serve, template, words):
    _, url = serve_script(serve, CALLS, template)
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER])
    assert caught.value.body["param"] == "tools" and words in caught.value.body["message"]


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
])
def test_bad_tool_fields_name_themselves(serve, fields, param):
    _, url = serve_script(serve, CALLS)
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="fake", messages=ASK, **fields)
    assert caught.value.body["param"] == param


@pytest.mark.parametrize("stream", [False, True])
def test_each_sample_has_its_own_calls(serve, stream):
    _, url = serve_script(serve, CALLS)
    response = client(url).chat.completions.create(model="fake", messages=ASK, tools=[WEATHER], max_tokens=500,
                                                   n=2, stream=stream)
    if not stream:
        assert [(c.index, len(c.message.tool_calls), c.finish_reason) for c in response.choices] == [
            (0, 2, "tool_calls"), (1, 2, "tool_calls")]
        return
    chunks = [c.choices[0] for c in response]
    for index in (0, 1):
        calls = [call.index for c in chunks if c.index == index for call in c.delta.tool_calls or []]
        assert calls == [0, 1]
        assert [c.finish_reason for c in chunks if c.index == index][-1] == "tool_calls"
