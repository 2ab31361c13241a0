"""What a request may cost the server: every user-caused failure is a 400, and the loop stays free."""

import json
import threading
import time

import httpx
import pytest

from llmc.runtime.server.chat import ChatTemplate, ChatTemplateError
from serve_harness import FakeEngine

CHAT = "/v1/chat/completions"


def post(url: str, path: str, body=None, content=None, timeout=30.0) -> httpx.Response:
    """`body` as JSON with \\u escapes, so that a lone surrogate reaches the server as JSON carries it."""
    content = json.dumps(body).encode() if content is None else content
    return httpx.post(f"{url}{path}", content=content, timeout=timeout, headers={"content-type": "application/json"})


def _is_400(response: httpx.Response, *words: str) -> dict:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]
    return error


@pytest.mark.parametrize("path, body, words", [
    ("/v1/completions", {"prompt": "ok", "top_k": 2**31}, ("top_k",)),
    ("/v1/completions", {"prompt": "ok", "top_k": 2**70}, ("top_k",)),
    ("/v1/completions", {"prompt": "ok", "temperature": 1e-30}, ("temperature",)),
    ("/v1/completions", {"prompt": "ok", "top_p": 1e-60}, ("top_p",)),
    ("/v1/completions", {"prompt": "ok", "seed": 2**64}, ("seed",)),
    ("/v1/completions", {"prompt": "ok", "stop_token_ids": [2**40]}, ("stop_token_ids",)),
    ("/v1/completions", {"prompt": "ok", "stop": ["x" * 5000]}, ("stop",)),
    ("/v1/completions", {"prompt": "ok", "max_tokens": 2**80}, ("context length",)),
    ("/v1/completions", {"prompt": "a\ud800b"}, ("lone surrogate", "prompt")),
    ("/v1/completions", {"prompt": "x" * 100_000}, ("prompt has 100000 characters",)),
    (CHAT, {"messages": [{"role": "user", "content": "a\udfffb"}]}, ("lone surrogate", "messages[0].content")),
    (CHAT, {"messages": [{"role": "us\ud800er", "content": "hi"}]}, ("lone surrogate", "messages")),
])
def test_bad_requests_are_400_and_the_engine_stays_healthy(fake_engine, serve, path, body, words):
    url = serve(fake_engine).url
    _is_400(post(url, path, {"model": "fake", "max_tokens": 2, **body}), *words)
    ok = post(url, "/v1/completions", {"model": "fake", "prompt": "hello", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["choices"][0]["text"]
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_body_over_the_limit_is_refused_unread(fake_engine, serve):
    url = serve(fake_engine, max_body_bytes=1 << 20).url
    _is_400(post(url, "/v1/completions", content=b'{"prompt": "' + b"x" * (2 << 20) + b'"}'), "request body is over")

    def chunks():  # no content-length: counted while it arrives
        yield b'{"prompt": "'
        for _ in range(64):
            yield b"x" * (64 << 10)
        yield b'"}'

    response = httpx.post(f"{url}/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    _is_400(response, "request body is over")
    assert post(url, "/v1/completions", {"prompt": "hello", "max_tokens": 1}).status_code == 200


def test_health_answers_while_a_huge_prompt_is_refused():
    from llmc.runtime.server import create_app
    from serve_harness import running_server

    engine = FakeEngine(max_model_len=1 << 20)  # allows a huge prompt: the tokenizer must do the work
    slow = engine.tokenizer.encode

    def encode(text):
        time.sleep(1.5)  # as a 50 MB prompt takes the real tokenizer
        return slow(text[:10])

    engine.tokenizer.encode = encode
    with running_server(create_app(engine), 5.0) as served:
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=post(served.url, "/v1/completions",
                                                                     {"prompt": "y" * (8 << 20), "max_tokens": 1})))
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert httpx.get(f"{served.url}/health", timeout=5).status_code == 200
        assert time.monotonic() - started < 0.5, "the event loop was blocked"
        thread.join()
        assert result["r"].status_code == 200


def test_huge_prompt_is_refused_before_tokenizing(serve):
    engine = FakeEngine(max_model_len=64)
    engine.tokenizer.encode = lambda text: pytest.fail("tokenized a prompt that cannot fit")
    url = serve(engine).url
    started = time.monotonic()
    _is_400(post(url, "/v1/completions", {"prompt": "z" * 500_000}), "has 500000 characters")
    _is_400(post(url, "/v1/completions", {"prompt": "z" * (20 << 20)}), "request body is over 1048576 bytes")
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("template, words", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", ("budget",)),
    ("{{ 'x' * 10000000000 }}", ("repeats",)),
    ("{{ [1] * 10000000000 }}", ("repeats",)),
    ("{{ 10 ** 100000000 }}", ("power",)),
    ("{% for i in range(100000) %}{{ 'y' * 1000 }}{% endfor %}", ("wrote over",)),
    ("{{ messages[0]['content'] + 1 }}", ("TypeError",)),
    ("{{ messages[5] }}{{ messages[5]['x'] }}", ("failed",)),
])
def test_chat_templates_run_within_a_budget(fake_engine, serve, template, words):
    started = time.monotonic()
    with pytest.raises(ChatTemplateError) as e:
        ChatTemplate(template, time_limit=0.5, max_chars=1 << 20).render([{"role": "user", "content": "hi"}])
    assert time.monotonic() - started < 5
    for word in words:
        assert word in str(e.value)
    url = serve(fake_engine, chat_template=template).url
    _is_400(post(url, CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
    assert httpx.get(f"{url}/health").status_code == 200
