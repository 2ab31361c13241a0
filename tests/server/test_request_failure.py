"""A request the engine failed alone (its output carries `error`) gets an error; the engine serves on."""

import dataclasses

import httpx

from serve_harness import FakeEngine


class FailingSteps(FakeEngine):
    """While `failing`, every request's step fails the way the engine reports a failure it isolated."""

    failing = False

    def _advance(self, request_id):
        out = super()._advance(request_id)
        if not self.failing:
            return out
        self.running.pop(request_id, None)
        return dataclasses.replace(out, finished=True, finish_reason="error", error="the step's launch failed")


def test_a_failed_request_is_an_error_and_the_engine_serves_on(serve):
    engine = FailingSteps()
    server = serve(engine)
    body = {"model": "fake", "prompt": "hello", "max_tokens": 4}
    assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).status_code == 200
    engine.failing = True
    failed = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
    assert failed.status_code == 500 and "the step's launch failed" in failed.json()["error"]["message"]
    streamed = httpx.post(f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=30)
    assert "the step's launch failed" in streamed.text and streamed.text.rstrip().endswith("data: [DONE]")
    engine.failing = False
    assert httpx.post(f"{server.url}/v1/completions", json=body, timeout=30).status_code == 200
