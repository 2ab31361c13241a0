"""Every request field is honoured or refused by name (400, `param`), through the official openai client."""

import openai
import pytest

from serve_harness import FakeEngine

CHAT = [{"role": "user", "content": "hi"}]


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def url(fake_engine, serve):
    return serve(fake_engine).url


def refused(call, **fields) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        call(**fields)
    return caught.value


def completion(url):
    return lambda extra_body=None, **fields: client(url).completions.create(
        **{"model": "fake", "prompt": "hello", "max_tokens": 3, "extra_body": extra_body, **fields})


def chat(url):
    return lambda extra_body=None, **fields: client(url).chat.completions.create(
        **{"model": "fake", "messages": CHAT, "max_tokens": 3, "extra_body": extra_body, **fields})


# penalties, min_p, min_tokens, logit_bias and structured output: test_serve_sampling.py;
# logprobs, top_logprobs and echo: test_serve_logprobs.py


@pytest.mark.parametrize("fields", [
    {"best_of": 2}, {"suffix": "x"},
])
def test_completion_only_fields_not_served_yet(url, fields):
    error = refused(completion(url), **fields)
    assert error.body["param"] == next(iter(fields))


def test_chat_echo_is_refused(url):
    assert refused(chat(url), extra_body={"echo": True}).body["param"] == "echo"
    assert refused(chat(url), parallel_tool_calls=False).body["param"] == "parallel_tool_calls"


@pytest.mark.parametrize("endpoint", [completion, chat])
def test_neutral_values_are_accepted(url, endpoint):
    plain = endpoint(url)(seed=1)
    neutral = endpoint(url)(seed=1, presence_penalty=0, frequency_penalty=0.0, logit_bias={}, n=1, user="u",
                            extra_body={"repetition_penalty": 1.0, "min_p": 0, "min_tokens": 0,
                                        "response_format": {"type": "text"}, "top_k": -1})
    text = (lambda r: r.choices[0].text) if endpoint is completion else (lambda r: r.choices[0].message.content)
    assert text(neutral) == text(plain)


@pytest.mark.parametrize("endpoint", [completion, chat])
@pytest.mark.parametrize("field", ["frobnicate", "guided_whitespace_pattern", "metadata"])
def test_unknown_fields_are_refused_by_name(url, endpoint, field):
    error = refused(endpoint(url), extra_body={field: 1})
    assert error.body["param"] == field
    assert error.body["message"] == f"Unrecognized request argument supplied: {field}"


def test_unknown_stream_option_is_refused(url):
    options = {"include_usage": True, "continuous_usage_stats": True}
    error = refused(completion(url), stream=True, stream_options=options)
    assert error.body["param"] == "stream_options.continuous_usage_stats"


@pytest.mark.parametrize("include, text", [(False, "he"), (True, "hel")])
def test_include_stop_str_in_output(serve, include, text):
    url = serve(FakeEngine(script="hello world")).url
    whole = completion(url)(max_tokens=20, stop=["l"], extra_body={"include_stop_str_in_output": include})
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == (text, "stop")
    chunks = completion(url)(max_tokens=20, stop="l", stream=True, extra_body={"include_stop_str_in_output": include})
    assert "".join(c.choices[0].text for c in chunks) == text


def test_add_generation_prompt_is_honoured(serve):
    engine = FakeEngine()
    url = serve(engine).url
    usage = [chat(url)(extra_body={"add_generation_prompt": flag}).usage.prompt_tokens for flag in (True, False)]
    assert usage[0] - usage[1] == len("assistant:")
