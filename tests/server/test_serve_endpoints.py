"""--api-key, /tokenize, /detokenize, /version, GET /v1/models/{id}, and the start-up log line."""

import logging

import httpx
import openai
import pytest

from llmc import __version__
from serve_harness import FakeEngine

KEY = "sk-test"


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_api_key_guards_v1(fake_engine, serve):
    url = serve(fake_engine, api_key=KEY).url
    assert client(url, KEY).completions.create(model="fake", prompt="hi", max_tokens=2).choices[0].text
    assert [m.id for m in client(url, KEY).models.list().data] == ["fake"]
    for key in ("wrong", KEY + "x"):
        with pytest.raises(openai.AuthenticationError) as caught:
            client(url, key).chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 401
        assert caught.value.body["code"] == "invalid_api_key"
    bare = httpx.post(f"{url}/v1/completions", json={"prompt": "hi"})
    assert bare.status_code == 401 and set(bare.json()["error"]) == {"message", "type", "param", "code"}
    for path in ("/health", "/metrics", "/version"):  # open, as in vLLM
        assert httpx.get(f"{url}{path}").status_code == 200


def test_without_api_key_any_token_is_accepted(fake_engine, serve):
    url = serve(fake_engine).url
    assert client(url, "anything").completions.create(model="fake", prompt="hi", max_tokens=1).choices


def test_tokenize_and_detokenize(fake_engine, serve):
    url = serve(fake_engine).url
    tokens = httpx.post(f"{url}/tokenize", json={"model": "fake", "prompt": "hey", "return_token_strs": True}).json()
    assert tokens == {"count": 3, "max_model_len": 64, "tokens": [104, 101, 121], "token_strs": ["h", "e", "y"]}
    chat = httpx.post(f"{url}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert chat["tokens"] == [ord(c) for c in "user: hi\nassistant:"] and chat["token_strs"] is None
    assert httpx.post(f"{url}/detokenize", json={"model": "fake", "tokens": [104, 105]}).json() == {"prompt": "hi"}


@pytest.mark.parametrize("path, body, param", [
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, "prompt"),
    ("/tokenize", {"prompt": "a", "add_special_tokens": True}, "add_special_tokens"),
    ("/tokenize", {"prompt": "a", "model": "other"}, "model"),
    ("/detokenize", {"tokens": [-1]}, "tokens"),
    ("/detokenize", {"tokens": "abc"}, "tokens"),
])
def test_tokenize_errors_name_their_field(fake_engine, serve, path, body, param):
    response = httpx.post(f"{serve(fake_engine).url}{path}", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param


def test_version(fake_engine, serve):
    assert httpx.get(f"{serve(fake_engine).url}/version").json() == {"version": __version__}


def test_retrieve_a_model(fake_engine, serve):
    url = serve(fake_engine, model_name="org/zen").url
    model = client(url, "x").models.retrieve("org/zen")
    assert (model.id, model.owned_by, model.model_extra["max_model_len"]) == ("org/zen", "llmc", 64)
    with pytest.raises(openai.NotFoundError) as caught:
        client(url, "x").models.retrieve("gpt-4")
    assert caught.value.body["code"] == "model_not_found" and caught.value.body["param"] == "model"


def test_startup_line_names_the_model_target_device_context_blocks_and_buckets(serve, caplog):
    with caplog.at_level(logging.INFO, logger="llmc.serve"):
        serve(FakeEngine(num_blocks=32))
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("serving"))
    for words in ("serving fake (FakeForCausalLM, float32) built for cpu on cpu", "context 64 tokens",
                  "32 KV blocks of 4 tokens", "decode [1, 2, 4], prefill [16, 64]"):
        assert words in line, line
