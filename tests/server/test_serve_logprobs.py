"""logprobs, top_logprobs and echo through the server, with the official openai client, against
log_softmax of the engine's own logits (`Engine.score`) on a CPU bundle of examples/zen-llama."""


import numpy as np
import openai
import pytest
import torch

from llmc.runtime import Engine, SamplingParams
from llmc.runtime.server import create_app
from serve_harness import running_server
from zen_bundles import build_zen, one_torch_thread

PROMPT = "Beautiful is better than ugly. Explicit is"
TOL = 1e-4


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    with one_torch_thread():
        out = build_zen(tmp_path_factory.mktemp("serve_logprobs") / "zen.llmc", use_cache=False, max_batch_size=4,
                        max_seq_len=128)
        served, offline = Engine.load(out, device="cpu"), Engine.load(out, device="cpu")
        yield served, offline
        served.close()
        offline.close()


@pytest.fixture(scope="module")
def client(engines):
    with running_server(create_app(engines[0])) as served:
        yield openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)


def log_softmax(engine, ids: list[int]) -> np.ndarray:
    return torch.log_softmax(torch.from_numpy(engine.score(ids)), dim=-1).numpy()


def token_ids(engine, tokens: list[str], prompt: list[int]) -> list[int]:
    """The generated ids, found again by greedy decoding offline (the response names tokens by text)."""
    params = SamplingParams(max_tokens=len(tokens), temperature=0.0, ignore_eos=True)
    return engine.generate(prompt, params)[0].token_ids


@pytest.mark.parametrize("stream", [False, True])
def test_completion_logprobs_match_score(client, engines, stream):
    offline = engines[1]
    prompt = offline.tokenizer.encode(PROMPT)
    response = client.completions.create(model="zen.llmc", prompt=PROMPT, max_tokens=5, temperature=0, logprobs=3,
                                         stream=stream)
    if stream:
        lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for chunk in response:
            if chunk.choices and chunk.choices[0].logprobs is not None:
                for key in lp:
                    lp[key] += getattr(chunk.choices[0].logprobs, key)
    else:
        lp = response.choices[0].logprobs.model_dump()
    out = token_ids(offline, lp["tokens"], prompt)
    want = log_softmax(offline, prompt + out[:-1])
    assert len(lp["token_logprobs"]) == len(out) == 5
    for i, token in enumerate(out):
        row = want[len(prompt) - 1 + i]
        assert abs(lp["token_logprobs"][i] - row[token]) <= TOL
        assert lp["tokens"][i] == offline.tokenizer.decode([token])
        top = sorted(lp["top_logprobs"][i].values(), reverse=True)
        np.testing.assert_allclose(top[:3], np.sort(row)[::-1][:3], atol=TOL)
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_max_tokens_zero_gives_prompt_logprobs(client, engines, stream):
    offline = engines[1]
    prompt = offline.tokenizer.encode(PROMPT)
    usage_option = {"stream_options": {"include_usage": True}} if stream else {}
    response = client.completions.create(model="zen.llmc", prompt=prompt, max_tokens=0, echo=True, logprobs=1,
                                         stream=stream, **usage_option)
    if stream:
        chunks = list(response)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        lp = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs is not None]
        assert len(lp) == 1
        lp, usage = lp[0], chunks[-1].usage
    else:
        text, lp, usage = response.choices[0].text, response.choices[0].logprobs, response.usage
    assert text == offline.tokenizer.decode(prompt)
    assert (usage.prompt_tokens, usage.completion_tokens) == (len(prompt), 0)
    want = log_softmax(offline, prompt)
    assert len(lp.token_logprobs) == len(prompt) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for j in range(1, len(prompt)):
        assert abs(lp.token_logprobs[j] - want[j - 1, prompt[j]]) <= TOL
        assert max(lp.top_logprobs[j].values()) == pytest.approx(want[j - 1].max(), abs=TOL)


def test_echo_with_completion_starts_with_the_prompt(client):
    response = client.completions.create(model="zen.llmc", prompt=PROMPT, max_tokens=3, temperature=0, echo=True)
    plain = client.completions.create(model="zen.llmc", prompt=PROMPT, max_tokens=3, temperature=0)
    assert response.choices[0].text.endswith(plain.choices[0].text) and response.choices[0].text.startswith("Beautiful")


@pytest.mark.parametrize("stream", [False, True])
def test_chat_logprobs_and_top_logprobs(client, engines, stream):
    messages = [{"role": "user", "content": "Beautiful is better than"}]
    response = client.chat.completions.create(model="zen.llmc", messages=messages, max_tokens=4, temperature=0,
                                              logprobs=True, top_logprobs=2, stream=stream)
    if stream:
        content = [e for c in response if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    else:
        content = response.choices[0].logprobs.content
    assert len(content) == 4
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.logprob <= 0
        assert entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=TOL)  # greedy: the likeliest


@pytest.mark.parametrize("create,kwargs,field", [
    ("completions", {"prompt": "x", "logprobs": 21}, "logprobs"),
    ("completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ("completions", {"prompt": "x", "extra_body": {"top_logprobs": 2}}, "top_logprobs"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 30}, "top_logprobs"),
    ("chat", {"messages": [{"role": "user", "content": "x"}], "extra_body": {"echo": True}}, "echo"),
])
def test_out_of_range_is_a_400_naming_the_field(client, create, kwargs, field):
    api = client.completions if create == "completions" else client.chat.completions
    with pytest.raises(openai.BadRequestError) as e:
        api.create(model="zen.llmc", **kwargs)
    assert e.value.body["param"] == field


def test_completion_logprobs_zero_gives_the_chosen_token_only(client):
    lp = client.completions.create(model="zen.llmc", prompt=PROMPT, max_tokens=2, temperature=0, logprobs=0
                                   ).choices[0].logprobs
    assert len(lp.tokens) == 2 and all(list(top) == [token] for top, token in zip(lp.top_logprobs, lp.tokens))

