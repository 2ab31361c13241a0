"""A fake engine (the real one's API, deterministic letters) and a uvicorn server on loopback."""

import math
import signal
import socket
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from llmc.errors import UserError

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


class FakeTokenizer:
    """One token per character."""

    chat_template = CHAT_TEMPLATE
    bos_token = None
    eos_token = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


@dataclass
class FakeOutput:
    request_id: str
    new_token_ids: list
    new_text: str
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int
    error: str | None = None  # as the engine's RequestOutput: this request failed alone
    index: int = 0  # which sample of the request


@dataclass
class FakeCompletion:
    token_ids: list
    text: str
    finish_reason: str


class _Sequence:
    def __init__(self, prompt_ids, params, script: str | None = None, seed: int = 0):
        self.prompt_ids, self.params, self.script, self.seed = list(prompt_ids), params, script, seed
        self.output_ids: list[int] = []
        self.text = ""

    def next_token(self) -> int:
        """The script's next character, or a letter fixed by the prompt, the seed and the position."""
        if self.script is not None:
            return ord(self.script[len(self.output_ids)])
        salt = self.seed + sum(self.prompt_ids)
        return ord("a") + (salt + 7 * len(self.output_ids)) % 26

    @property
    def script_done(self) -> bool:
        return self.script is not None and len(self.output_ids) >= len(self.script)

    def blocks(self, block_size: int) -> int:
        return math.ceil((len(self.prompt_ids) + len(self.output_ids)) / block_size)


class FakeBundle:
    manifest = {"model": {"architecture": "FakeForCausalLM"}, "target": {"name": "cpu", "backend": "cpu"},
                "build": {"dtype": "float32", "decode_buckets": [1, 2, 4], "prefill_buckets": [16, 64]},
                "kv_cache": {"block_size": 4}}


class FakeEngine:
    """Continuous batching in miniature: FIFO admission up to max_num_seqs, one token a step. With `script`,
    every request's output is that text (one token a character), then it stops. Sequences are keyed
    (request_id, index): sample i of a request with n samples draws with seed + i, as the engine's."""

    model_name = "fake"
    vocab_size = 0x110000  # every code point
    device_name = "cpu"
    bundle = FakeBundle()
    load_summary = {"weights_bytes": 0, "kv_tokens": 128}

    def __init__(self, max_model_len=64, max_num_seqs=4, block_size=4, num_blocks=32, step_delay=0.0,
                 script: str | None = None):
        self.script = script
        self.prompts: list[list[int]] = []  # every prompt added, in order
        self.params: list = []  # and its SamplingParams
        self.tokenizer = FakeTokenizer()
        self.max_model_len, self.max_num_seqs = max_model_len, max_num_seqs
        self.block_size, self.num_blocks, self.step_delay = block_size, num_blocks, step_delay
        self.gate = threading.Event()  # clear it to hold the engine between steps
        self.gate.set()
        self.waiting: dict[tuple[str, int], _Sequence] = {}
        self.running: dict[tuple[str, int], _Sequence] = {}
        self.steps = 0

    def add_request(self, request_id, prompt, params) -> None:
        prompt_ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise UserError(f"prompt of {len(prompt_ids)} tokens is too long")
        if math.ceil((len(prompt_ids) + params.max_tokens) / self.block_size) > self.num_blocks:
            raise UserError("the request can never fit in the KV cache")
        self.prompts.append(prompt_ids)
        self.params.append(params)
        for i in range(params.n):
            self.waiting[request_id, i] = _Sequence(prompt_ids, params, self.script, (params.seed or 0) + i)

    def abort(self, request_id) -> None:
        for queue in (self.waiting, self.running):
            for key in [key for key in queue if key[0] == request_id]:
                del queue[key]

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> list[FakeOutput]:
        self.gate.wait()
        while self.waiting and len(self.running) < self.max_num_seqs:
            key = next(iter(self.waiting))
            self.running[key] = self.waiting.pop(key)
        time.sleep(self.step_delay)
        self.steps += 1
        return [self._advance(key) for key in list(self.running)]

    def _advance(self, key) -> FakeOutput:
        seq = self.running[key]
        token = seq.next_token()
        seq.output_ids.append(token)
        new_text = chr(token)
        reason = None
        stops = [(i, len(s)) for s, i in ((s, (seq.text + new_text).find(s)) for s in seq.params.stop) if i >= 0]
        if stops:
            at, length = min(stops)
            end = at + length if seq.params.include_stop_str_in_output else at
            new_text = (seq.text + new_text)[:end][len(seq.text):]
            reason = "stop"
        elif seq.script_done:
            reason = "stop"
        elif len(seq.output_ids) >= seq.params.max_tokens:
            reason = "length"
        seq.text += new_text
        if reason:
            del self.running[key]
        return FakeOutput(key[0], [token], new_text, reason is not None, reason,
                          len(seq.prompt_ids), len(seq.output_ids), index=key[1])

    def stats(self) -> dict:
        used = sum(seq.blocks(self.block_size) for seq in self.running.values())
        return {"num_running": len(self.running), "num_waiting": len(self.waiting),
                "kv_blocks_used": used, "kv_blocks_total": self.num_blocks}

    def close(self) -> None:
        pass

    def generate(self, prompts, params) -> list[FakeCompletion]:
        offline = FakeEngine(self.max_model_len, self.max_num_seqs, self.block_size, self.num_blocks,
                             script=self.script)
        params = params if isinstance(params, list) else [params] * len(prompts)
        outputs = {(str(i), j): [] for i, p in enumerate(params) for j in range(p.n)}  # prompt-major
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            offline.add_request(str(i), prompt, p)
        while offline.has_unfinished():
            for out in offline.step():
                outputs[out.request_id, out.index].append(out)
        return [FakeCompletion([t for o in outs for t in o.new_token_ids], "".join(o.new_text for o in outs),
                               outs[-1].finish_reason) for outs in outputs.values()]


@dataclass
class Served:
    url: str
    app: object
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def engine_loop(self):
        return self.app.state.engine_loop


@contextmanager
def running_server(app, graceful_timeout: float = 5.0):
    """Serve `app` with uvicorn on a free loopback port, in a thread; yields a Served."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=graceful_timeout)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app, server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not become healthy")


def sigterm_drains(command: list[str], url: str, body: dict, env: dict | None = None) -> None:
    """Start `command`, stream one request, SIGTERM the server mid-stream: it takes no new
    connection, finishes the stream, and exits 0."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_until_healthy(url, process)
        with httpx.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
            events = (line for line in r.iter_lines() if line)
            received = [next(events)]
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{url}/health")
            received += list(events)
        assert received[-1] == "data: [DONE]"
        assert '"finish_reason":"length"' in received[-2]
        assert process.wait(timeout=60) == 0, process.communicate()[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
