"""The server's own logic over real HTTP, on a fake engine: fast and deterministic."""

import asyncio
import json
import time

import httpx
from prom import metric
import openai
import pytest

from llmc.runtime import SamplingParams
from serve_harness import FakeEngine

BODY = {"model": "fake", "prompt": "hello", "max_tokens": 5}


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)




def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_models_and_health(fake_engine, serve):
    url = serve(fake_engine).url
    assert httpx.get(f"{url}/health").status_code == 200
    assert [m.id for m in client(url).models.list().data] == ["fake"]
    assert httpx.get(f"{url}/v1/models").json()["data"][0]["max_model_len"] == 64


def test_served_model_name(fake_engine, serve):
    url = serve(fake_engine, model_name="zen").url
    assert client(url).completions.create(model="zen", prompt="a", max_tokens=1).model == "zen"


def test_completion_text_and_token_ids(fake_engine, serve):
    url = serve(fake_engine).url
    offline = fake_engine.generate(["hello"], seeded(max_tokens=5, seed=3))[0]
    for prompt in ("hello", [ord(c) for c in "hello"]):
        response = client(url).completions.create(model="fake", prompt=prompt, max_tokens=5, seed=3)
        assert response.object == "text_completion"
        assert response.choices[0].text == offline.text
        assert response.choices[0].finish_reason == "length"
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 5)


def test_completion_stream_with_usage(fake_engine, serve):
    url = serve(fake_engine).url
    chunks = list(client(url).completions.create(model="fake", prompt="hello", max_tokens=5, seed=3, stream=True,
                                                 stream_options={"include_usage": True}))
    *tokens, last = chunks
    expected = fake_engine.generate(["hello"], seeded(5, 3))[0].text
    assert "".join(c.choices[0].text for c in tokens) == expected
    assert [c.choices[0].finish_reason for c in tokens] == [None] * 4 + ["length"]
    assert last.choices == [] and last.usage.total_tokens == 10


def test_stream_ends_with_done(fake_engine, serve):
    url = serve(fake_engine).url
    with httpx.stream("POST", f"{url}/v1/completions", json={**BODY, "stream": True}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(json.loads(e[len("data: "):])["object"] == "text_completion" for e in events[:-1])


def test_chat(fake_engine, serve):
    url = serve(fake_engine).url
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    rendered = "system: be brief\nuser: hi\nassistant:"
    expected = fake_engine.generate([rendered], seeded(4, 1))[0].text
    response = client(url).chat.completions.create(model="fake", messages=messages, max_tokens=4, seed=1)
    assert response.object == "chat.completion"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == expected
    assert response.usage.prompt_tokens == len(rendered)

    chunks = list(client(url).chat.completions.create(model="fake", messages=messages, max_tokens=4, seed=1,
                                                      stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_template_override(fake_engine, serve):
    url = serve(fake_engine, chat_template="{{ messages[-1]['content'] }}").url
    response = client(url).chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}],
                                                   max_tokens=1)
    assert response.usage.prompt_tokens == 2


def test_chat_without_template_is_refused(fake_engine, serve):
    fake_engine.tokenizer.chat_template = None
    url = serve(fake_engine).url
    with pytest.raises(openai.BadRequestError, match="--chat-template"):
        client(url).chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}])


def test_stop_string_cuts_the_text(fake_engine, serve):
    url = serve(fake_engine).url
    full = client(url).completions.create(model="fake", prompt="hello", max_tokens=8, seed=3).choices[0].text
    cut = client(url).completions.create(model="fake", prompt="hello", max_tokens=8, seed=3, stop=[full[3]])
    assert cut.choices[0].text == full[:3] and cut.choices[0].finish_reason == "stop"


def test_omitted_max_tokens_fills_the_context(fake_engine, serve):
    url = serve(fake_engine).url
    response = client(url).completions.create(model="fake", prompt="x" * 60)
    assert response.usage.completion_tokens == 4 and response.choices[0].finish_reason == "length"


@pytest.mark.parametrize("change, message", [
    ({"temperature": 2.5}, "temperature must be between 0 and 2"),
    ({"temperature": -1}, "temperature must be between 0 and 2"),
    ({"top_p": 0}, "top_p must be in (0, 1]"),
    ({"top_k": -5}, "top_k must be -1"),
    ({"max_tokens": 0}, "max_tokens must be at least 1"),
    ({"n": 0}, "n must be between 1 and 64"),
    ({"model": "gpt-4"}, "The model `gpt-4` does not exist"),
    ({"prompt": "x" * 60, "max_tokens": 10}, "This model's maximum context length is 64 tokens; you asked for 70"),
    ({"prompt": ""}, "prompt must not be empty"),
    ({"temperature": "hot"}, "temperature: "),
    ({"prompt": None}, "prompt: "),
])
def test_validation_errors_are_openai_shaped(fake_engine, serve, change, message):
    url = serve(fake_engine).url
    response = httpx.post(f"{url}/v1/completions", json={**BODY, **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    assert error["message"].startswith(message)


def test_unknown_paths_and_methods_get_openai_shaped_errors(fake_engine, serve):
    url = serve(fake_engine).url
    assert httpx.get(f"{url}/v1/nothing").json()["error"]["message"] == "Not Found"
    response = httpx.get(f"{url}/v1/completions")
    assert response.status_code == 405 and response.json()["error"]["message"] == "Method Not Allowed"


def test_openai_client_sees_bad_request(fake_engine, serve):
    url = serve(fake_engine).url
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "model_not_found" and "nope" in caught.value.message


def test_a_request_that_never_fits_the_kv_pool_is_refused(serve):
    engine = FakeEngine(num_blocks=2, block_size=4)
    url = serve(engine).url
    response = httpx.post(f"{url}/v1/completions", json={**BODY, "max_tokens": 10})
    assert response.status_code == 400
    assert "never fit in the KV cache" in response.json()["error"]["message"]
    assert not engine.has_unfinished()


def test_overload_is_503(serve):
    engine = FakeEngine(max_num_seqs=1)
    engine.gate.clear()  # the engine takes the first request, then holds before its step
    server = serve(engine, max_waiting=2)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            first = asyncio.create_task(http.post("/v1/completions", json=BODY))
            await until(lambda: server.engine_loop.queued == 1)
            second = asyncio.create_task(http.post("/v1/completions", json=BODY))
            await until(lambda: server.engine_loop.queued == 2)
            third = await http.post("/v1/completions", json=BODY)
            engine.gate.set()
            return await first, await second, third

    first, second, third = asyncio.run(scenario())
    assert (first.status_code, second.status_code, third.status_code) == (200, 200, 503)
    assert third.json()["error"]["type"] == "server_error"
    assert "overloaded" in third.json()["error"]["message"]


def test_disconnected_stream_frees_its_blocks(serve):
    engine = FakeEngine(step_delay=0.02)
    server = serve(engine)
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**BODY, "max_tokens": 50, "stream": True}) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(line for line in lines if line)
        assert metric(server.url, "llmc:kv_cache_usage_perc") > 0
    wait_for(lambda: metric(server.url, 'llmc:request_success_total{finished_reason="abort"}') == 1)
    assert metric(server.url, "llmc:kv_cache_usage_perc") == 0
    assert metric(server.url, "llmc:num_requests_running") == 0
    assert not engine.has_unfinished()


def test_disconnected_client_aborts_a_whole_response(serve):
    engine = FakeEngine(step_delay=0.05)
    server = serve(engine)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/completions", json={**BODY, "max_tokens": 50}, timeout=0.3)
    wait_for(lambda: metric(server.url, 'llmc:request_success_total{finished_reason="abort"}') == 1)
    assert not engine.has_unfinished() and engine.steps < 50


def test_a_new_request_joins_the_running_batch(serve):
    engine = FakeEngine(step_delay=0.02)
    server = serve(engine)

    async def scenario():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            body = {**BODY, "max_tokens": 40, "stream": True}
            chunks, joiner, chunks_when_joiner_done = 0, None, None
            async with http.stream("POST", "/v1/completions", json=body) as long_stream:
                async for line in long_stream.aiter_lines():
                    chunks += line.startswith("data: {")
                    if chunks == 5 and joiner is None:
                        joiner = asyncio.create_task(http.post("/v1/completions", json={**BODY, "max_tokens": 3}))
                    if joiner is not None and joiner.done() and chunks_when_joiner_done is None:
                        chunks_when_joiner_done = chunks
            return (await joiner).status_code, chunks_when_joiner_done

    status, chunks_when_joiner_done = asyncio.run(scenario())
    assert status == 200
    assert chunks_when_joiner_done is not None and chunks_when_joiner_done < 40
    assert engine.steps == 40


def test_metrics_count_tokens_and_latencies(fake_engine, serve):
    server = serve(fake_engine)
    for _ in range(2):
        client(server.url).completions.create(**BODY)
    text = httpx.get(f"{server.url}/metrics").text
    assert metric(server.url, 'llmc:request_success_total{finished_reason="length"}') == 2
    assert metric(server.url, "llmc:prompt_tokens_total") == 10
    assert metric(server.url, "llmc:generation_tokens_total") == 10
    assert metric(server.url, "llmc:time_to_first_token_seconds_count") == 2
    assert metric(server.url, "llmc:inter_token_latency_seconds_count") == 8
    assert metric(server.url, "llmc:kv_cache_usage_perc") == 0
    for name in ("llmc:num_requests_running", "llmc:num_requests_waiting", "llmc:kv_cache_usage_perc"):
        assert f'\n{name}{{model_name="fake"}} ' in text, text


def test_64_concurrent_requests_match_offline_generation(serve):
    engine = FakeEngine(max_num_seqs=8)
    server = serve(engine)
    prompts = [f"prompt {i}" for i in range(64)]
    params = [seeded(8, seed) for seed in range(64)]

    async def scenario():
        caller = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        requests = [caller.completions.create(model="fake", prompt=p, max_tokens=8, seed=seed)
                    for seed, p in enumerate(prompts)]
        return await asyncio.gather(*requests)

    responses = asyncio.run(scenario())
    assert [r.choices[0].text for r in responses] == [c.text for c in engine.generate(prompts, params)]


def test_an_engine_failure_fails_its_requests_and_the_loop_goes_on(fake_engine, serve, monkeypatch):
    server = serve(fake_engine)
    real_step = fake_engine.step

    def broken_step():
        monkeypatch.setattr(fake_engine, "step", real_step)
        raise RuntimeError("device lost")

    monkeypatch.setattr(fake_engine, "step", broken_step)
    response = httpx.post(f"{server.url}/v1/completions", json=BODY)
    assert response.status_code == 500
    assert response.json()["error"] == {"message": "internal error: device lost", "type": "server_error",
                                        "param": None, "code": None}
    assert httpx.post(f"{server.url}/v1/completions", json=BODY).status_code == 200
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_an_engine_failure_mid_stream_ends_the_stream_with_an_error(fake_engine, serve, monkeypatch):
    url = serve(fake_engine).url
    real_step, steps = fake_engine.step, iter(range(100))

    def failing_third_step():
        if next(steps) == 2:
            raise RuntimeError("device lost")
        return real_step()

    monkeypatch.setattr(fake_engine, "step", failing_third_step)
    with httpx.stream("POST", f"{url}/v1/completions", json={**BODY, "stream": True}) as response:
        events = [line for line in response.iter_lines() if line]
    assert len(events) == 4 and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][len("data: "):])["error"]["message"] == "device lost"


def test_shutdown_refuses_new_connections_and_lets_streams_finish(serve):
    served = serve(FakeEngine(step_delay=0.02))
    with httpx.stream("POST", f"{served.url}/v1/completions", json={**BODY, "max_tokens": 30, "stream": True}) as r:
        events = (line for line in r.iter_lines() if line)
        received = [next(events)]
        served.server.should_exit = True  # what uvicorn's SIGTERM handler does
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.url}/health")
        received += list(events)
    assert received[-1] == "data: [DONE]" and len(received) == 31
    served.thread.join(timeout=10)
    assert not served.thread.is_alive()


def test_shutdown_cuts_streams_that_outlast_the_grace_period(serve):
    engine = FakeEngine(step_delay=0.05)
    served = serve(engine, graceful_timeout=0.5)
    began = time.monotonic()
    with httpx.stream("POST", f"{served.url}/v1/completions", json={**BODY, "max_tokens": 50, "stream": True}) as r:
        events = (line for line in r.iter_lines() if line)
        next(events)
        served.server.should_exit = True
        with pytest.raises(httpx.RemoteProtocolError):  # the response ends before its last chunk
            list(events)
    served.thread.join(timeout=10)
    assert not served.thread.is_alive() and time.monotonic() - began < 2.5
    assert not engine.has_unfinished()


async def until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def seeded(max_tokens, seed):
    return SamplingParams(max_tokens=max_tokens, seed=seed)
