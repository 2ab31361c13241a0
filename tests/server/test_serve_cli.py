"""`llmc serve` as a command: the missing extra, and SIGTERM in a real process (on the fake engine)."""

import sys
from pathlib import Path

from click.testing import CliRunner

from llmc.cli.serve import SERVE_EXTRA_MISSING, serve
from serve_harness import free_port, sigterm_drains

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
