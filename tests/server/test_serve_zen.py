"""The server end to end: the real Engine on a CPU bundle of examples/zen-llama, called with `openai`."""

import asyncio
import codecs
import contextlib
import io
import os
import re
import sys
import time
from pathlib import Path

import httpx
from prom import metric
import openai
import pytest

from llmc.runtime import Engine, SamplingParams
from llmc.runtime.server import create_app
from serve_harness import free_port, running_server, sigterm_drains
from zen_bundles import build_zen, one_torch_thread



def zen_lines() -> list[str]:
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return [line for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line]


def zen_prompts(count: int) -> list[str]:
    """`count` different prompts: the first 1, 2, 3 … words of each line of the Zen."""
    prompts = []
    for words in range(1, 8):
        prompts += [" ".join(line.split()[:words]) for line in zen_lines()]
    return list(dict.fromkeys(prompts))[:count]


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def zen_bundle(tmp_path_factory) -> Path:
    return build_zen(tmp_path_factory.mktemp("serve") / "zen.llmc", max_batch_size=8, max_seq_len=256)


@pytest.fixture(scope="module")
def engine(zen_bundle):
    engine = Engine.load(zen_bundle, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def offline_engine(zen_bundle):
    """A second engine for the expected outputs: the served one belongs to the server's loop thread."""
    engine = Engine.load(zen_bundle, device="cpu")
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def served(engine):
    with running_server(create_app(engine)) as served:
        yield served


@pytest.fixture(scope="module")
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0)




def offline(engine, prompt, **params):
    return engine.generate([prompt], SamplingParams(**params))[0]


def test_models_lists_the_bundle(client, engine):
    assert [m.id for m in client.models.list().data] == [engine.model_name]


def test_completion(client, served, engine, offline_engine):
    expected = offline(offline_engine, "Beautiful is", max_tokens=12, temperature=0)
    response = client.completions.create(model=engine.model_name, prompt="Beautiful is", max_tokens=12,
                                         temperature=0)
    assert response.choices[0].text == expected.text
    assert response.choices[0].text.startswith(" better than ugly.")
    assert response.usage.prompt_tokens == len(engine.tokenizer.encode("Beautiful is"))
    assert response.usage.completion_tokens == len(expected.token_ids)


def test_completion_from_token_ids(client, engine, offline_engine):
    ids = engine.tokenizer.encode("Explicit is")
    response = client.completions.create(model=engine.model_name, prompt=ids, max_tokens=8, temperature=0)
    assert response.choices[0].text == offline(offline_engine, ids, max_tokens=8, temperature=0).text


def test_completion_stream(client, engine, offline_engine):
    expected = offline(offline_engine, "Simple is", max_tokens=16, temperature=0.7, seed=5)
    chunks = list(client.completions.create(model=engine.model_name, prompt="Simple is", max_tokens=16,
                                            temperature=0.7, seed=5, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == expected.text
    assert chunks[-2].choices[0].finish_reason == expected.finish_reason
    assert chunks[-1].usage.completion_tokens == len(expected.token_ids)


def test_chat(client, engine, offline_engine):
    messages = [{"role": "user", "content": "Beautiful is"}]
    rendered = "user: Beautiful is\nassistant:"
    expected = offline(offline_engine, rendered, max_tokens=10, temperature=0)
    response = client.chat.completions.create(model=engine.model_name, messages=messages, max_tokens=10,
                                              temperature=0)
    assert response.choices[0].message.content == expected.text
    assert response.usage.prompt_tokens == len(engine.tokenizer.encode(rendered))

    chunks = list(client.chat.completions.create(model=engine.model_name, messages=messages, max_tokens=10,
                                                 temperature=0, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected.text


@pytest.mark.parametrize("include, text", [(False, " better "), (True, " better than")])
def test_include_stop_str_in_output(client, engine, include, text):
    fields = {"model": engine.model_name, "prompt": "Beautiful is", "max_tokens": 12, "temperature": 0,
              "stop": [" ugly", "than"], "extra_body": {"include_stop_str_in_output": include}}
    response = client.completions.create(**fields)
    assert (response.choices[0].text, response.choices[0].finish_reason) == (text, "stop")
    assert "".join(c.choices[0].text for c in client.completions.create(**fields, stream=True)) == text


def test_n_samples_equal_their_seeds_run_alone(client, engine, offline_engine):
    response = client.completions.create(model=engine.model_name, prompt="Simple is", max_tokens=10, temperature=1.0,
                                         seed=11, n=3)
    expected = [offline(offline_engine, "Simple is", max_tokens=10, temperature=1.0, seed=11 + i) for i in range(3)]
    assert [c.text for c in sorted(response.choices, key=lambda c: c.index)] == [e.text for e in expected]
    assert response.usage.prompt_tokens == len(engine.tokenizer.encode("Simple is"))
    assert response.usage.completion_tokens == sum(len(e.token_ids) for e in expected)


def test_64_concurrent_requests_match_offline_generate(served, engine, offline_engine):
    prompts = zen_prompts(64)
    params = [SamplingParams(max_tokens=24, temperature=0.8, top_p=0.95, top_k=40, seed=seed) for seed in range(64)]
    expected = offline_engine.generate(prompts, params)

    async def scenario():
        caller = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=600)
        requests = [caller.completions.create(model=engine.model_name, prompt=p, max_tokens=24, temperature=0.8,
                                              top_p=0.95, seed=sp.seed, extra_body={"top_k": 40})
                    for p, sp in zip(prompts, params)]
        return await asyncio.gather(*requests)

    responses = asyncio.run(scenario())
    assert [r.choices[0].text for r in responses] == [c.text for c in expected]
    assert [r.choices[0].finish_reason for r in responses] == [c.finish_reason for c in expected]


@pytest.mark.parametrize("change, message", [
    ({"temperature": 2.1}, "temperature must be between 0 and 2"),
    ({"top_p": 0}, "top_p must be in (0, 1]"),
    ({"top_k": -2}, "top_k must be -1"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"n": 0}, "n must be between 1 and 64"),
    ({"model": "zen-70b"}, "The model `zen-70b` does not exist"),
    ({"max_tokens": 255}, "This model's maximum context length is 256 tokens; you asked for {}"),
])
def test_validation(served, engine, change, message):
    body = {"model": engine.model_name, "prompt": "Beautiful is", "max_tokens": 4, **change}
    response = httpx.post(f"{served.url}/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    asked = len(engine.tokenizer.encode("Beautiful is")) + body["max_tokens"]
    assert error["message"].startswith(message.format(asked))
    assert error["type"] == "invalid_request_error"


def test_validation_through_the_client(client, engine):
    with pytest.raises(openai.BadRequestError, match="maximum context length is 256 tokens"):
        client.chat.completions.create(model=engine.model_name, messages=[{"role": "user", "content": "x"}],
                                       max_tokens=300)


def test_kv_pool_admission(zen_bundle):
    """Refused at once when it can never fit; run one after another when they only fit alone."""
    engine = Engine.load(zen_bundle, device="cpu", num_kv_blocks=4)  # 64 tokens of KV cache
    with running_server(create_app(engine)) as served:
        response = httpx.post(f"{served.url}/v1/completions", json={"prompt": "Beautiful is", "max_tokens": 100})
        assert response.status_code == 400
        assert re.search(r"needs \d+ KV blocks; the pool has 4", response.json()["error"]["message"])

        async def scenario():
            async with httpx.AsyncClient(base_url=served.url, timeout=300) as http:
                body = {"prompt": "Beautiful is", "max_tokens": 40, "ignore_eos": True, "temperature": 0}
                return await asyncio.gather(*(http.post("/v1/completions", json=body) for _ in range(4)))

        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * 4
        assert len({r.json()["choices"][0]["text"] for r in responses}) == 1
    engine.close()


def test_disconnected_stream_frees_its_kv_blocks(served, engine):
    aborted = metric(served.url, 'llmc:request_success_total{finished_reason="abort"}')
    body = {"model": engine.model_name, "prompt": "Beautiful is", "max_tokens": 200, "stream": True,
            "ignore_eos": True}
    with httpx.stream("POST", f"{served.url}/v1/completions", json=body) as response:
        events = (line for line in response.iter_lines() if line)
        for _ in range(3):
            next(events)
        assert metric(served.url, "llmc:kv_cache_usage_perc") > 0
    deadline = time.monotonic() + 30
    while metric(served.url, 'llmc:request_success_total{finished_reason="abort"}') == aborted:
        assert time.monotonic() < deadline, "the aborted request is still running"
        time.sleep(0.05)
    assert metric(served.url, "llmc:kv_cache_usage_perc") == 0
    assert metric(served.url, "llmc:num_requests_running") == 0


def test_metrics(served, client, engine):
    before = metric(served.url, "llmc:generation_tokens_total")
    client.completions.create(model=engine.model_name, prompt="Beautiful is", max_tokens=5, temperature=0,
                              extra_body={"ignore_eos": True})
    assert metric(served.url, "llmc:generation_tokens_total") == before + 5
    assert metric(served.url, "llmc:time_to_first_token_seconds_count") >= 1
    assert metric(served.url, "llmc:inter_token_latency_seconds_count") >= 4
    assert "llmc:kv_cache_usage_perc{" in httpx.get(f"{served.url}/metrics").text


def test_sigterm_drains_the_real_server(zen_bundle):
    port = free_port()
    command = [sys.executable, "-m", "llmc.cli", "serve", str(zen_bundle), "--port", str(port),
               "--log-level", "warning"]
    body = {"prompt": "Beautiful is", "max_tokens": 64, "ignore_eos": True, "temperature": 0}
    sigterm_drains(command, f"http://127.0.0.1:{port}", body, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_tokenize_and_detokenize(served, engine):
    tokens = httpx.post(f"{served.url}/tokenize", json={"prompt": "Beautiful is better"}).json()
    assert tokens["tokens"] == engine.tokenizer.encode("Beautiful is better") and tokens["max_model_len"] == 256
    text = httpx.post(f"{served.url}/detokenize", json={"tokens": tokens["tokens"]}).json()["prompt"]
    assert text == engine.tokenizer.decode(tokens["tokens"])
    assert httpx.post(f"{served.url}/detokenize", json={"tokens": [engine.vocab_size]}).status_code == 400
