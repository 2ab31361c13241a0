"""n samples per request: n choices with their index, each as that seed run alone; the prompt counted once."""

import openai
import pytest

from llmc.runtime import SamplingParams
from serve_harness import FakeEngine


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def alone(engine, seed: int) -> str:
    return engine.generate(["hello"], SamplingParams(max_tokens=5, seed=seed))[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_completion_samples(fake_engine, serve, stream):
    url = serve(fake_engine).url
    response = client(url).completions.create(model="fake", prompt="hello", max_tokens=5, seed=3, n=3, stream=stream,
                                              **({"stream_options": {"include_usage": True}} if stream else {}))
    texts, reasons = {}, {}
    if stream:
        chunks = list(response)
        for chunk in chunks[:-1]:
            choice = chunk.choices[0]
            texts[choice.index] = texts.get(choice.index, "") + choice.text
            reasons[choice.index] = choice.finish_reason or reasons.get(choice.index)
        usage = chunks[-1].usage
    else:
        texts = {c.index: c.text for c in response.choices}
        reasons = {c.index: c.finish_reason for c in response.choices}
        usage = response.usage
    assert texts == {i: alone(fake_engine, 3 + i) for i in range(3)}
    assert len(set(texts.values())) == 3 and set(reasons.values()) == {"length"}
    assert (usage.prompt_tokens, usage.completion_tokens) == (5, 15)


def test_chat_samples(serve):
    url = serve(FakeEngine(script="same")).url
    response = client(url).chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], n=2)
    assert [(c.index, c.message.content, c.finish_reason) for c in response.choices] == [
        (0, "same", "stop"), (1, "same", "stop")]
    chunks = list(client(url).chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}], n=2,
                                                      stream=True))
    for index in (0, 1):
        mine = [c.choices[0] for c in chunks if c.choices[0].index == index]
        assert mine[0].delta.role == "assistant" and mine[-1].finish_reason == "stop"
        assert "".join(c.delta.content or "" for c in mine) == "same"
