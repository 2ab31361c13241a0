"""`llmc serve` as a command: the missing extra, and SIGTERM in a real process (on the fake engine)."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from click.testing import CliRunner

from llmc.cli.serve import SERVE_EXTRA_MISSING, serve
from serve_harness import free_port, sigterm_drains, wait_until_healthy

HERE = Path(__file__).parent

# Runs `llmc serve` with Engine.load answering a fake engine that takes 20 ms a step.
SERVE_ON_FAKE_ENGINE = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import llmc.runtime
from serve_harness import FakeEngine
llmc.runtime.Engine = type("Engine", (), {{"load": staticmethod(lambda path, **kw: FakeEngine(step_delay=0.02))}})
from llmc.cli.serve import serve
serve(sys.argv[1:])
"""


def test_missing_serve_extra_exits_2(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # `import uvicorn` now raises ImportError
    result = CliRunner().invoke(serve, [str(tmp_path)])
    assert result.exit_code == 2
    assert SERVE_EXTRA_MISSING in result.output


def test_sigterm_lets_the_running_request_finish_and_exits_0(tmp_path):
    port = free_port()
    command = [sys.executable, "-c", SERVE_ON_FAKE_ENGINE, str(tmp_path), "--port", str(port), "--device", "cpu",
               "--log-level", "warning"]
    sigterm_drains(command, f"http://127.0.0.1:{port}", {"prompt": "hello", "max_tokens": 40})


def test_api_key_from_the_environment_and_the_startup_line(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-c", SERVE_ON_FAKE_ENGINE, str(tmp_path), "--port", str(port), "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "LLMC_API_KEY": "sk-env"})
    try:
        wait_until_healthy(url, process)
        body = {"prompt": "hi", "max_tokens": 2}
        assert httpx.post(f"{url}/v1/completions", json=body).status_code == 401
        authorized = httpx.post(f"{url}/v1/completions", json=body, headers={"Authorization": "Bearer sk-env"})
        assert authorized.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert "serving fake (FakeForCausalLM, float32) built for cpu on cpu: context 64 tokens" in stderr, stderr
