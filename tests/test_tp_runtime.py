"""Tensor-parallel bundles on the cpu backend: one process per rank over gloo, rank 0 schedules.
The ranks together give the single-rank bundle's logits and tokens, batched and preempted alike;
a bad rank file or a rank killed mid-run ends the run with one message, within bounded time."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

pytest.importorskip("transformers")

from click.testing import CliRunner  # noqa: E402
from llmc.aot.build import BuildConfig, build  # noqa: E402
from llmc.cli.main import main  # noqa: E402
from llmc.errors import BundleError  # noqa: E402
from llmc.runtime import Engine, SamplingParams  # noqa: E402
from llmc.runtime.tensor_parallel import RankFailed  # noqa: E402
from tp_checkpoints import make_tp_checkpoint  # noqa: E402

PROMPTS = [[(7 * i + 3 * j) % 200 + 3 for j in range(n)] for i, n in enumerate([1, 5, 9, 14, 22])]
SCORED = [5, 17, 33, 101, 7, 9, 12, 200, 44]


def _params(i: int) -> SamplingParams:
    if i % 2:
        return SamplingParams(max_tokens=10, temperature=0.8, top_p=0.9, top_k=20, seed=100 + i, ignore_eos=True)
    return SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """family -> {ranks: bundle dir} for 1, 2 and 4 ranks (llama: 2 KV heads, replicated on 4 ranks)."""
    root = tmp_path_factory.mktemp("tp_runtime")
    result = {}
    for family, sizes in (("llama", (1, 2, 4)), ("qwen3", (1, 2))):
        model = make_tp_checkpoint(family, root / family)
        result[family] = {}
        for n in sizes:
            out = root / f"{family}-tp{n}.llmc"
            build(model, out, BuildConfig(target="cpu", dtype="float32", tensor_parallel_size=n, max_batch_size=4,
                                          max_seq_len=64, max_num_batched_tokens=32, kv_block_size=4), use_cache=False)
            result[family][n] = out
    return result


def _outputs(bundle, **options):
    engine = Engine.load(bundle, device="cpu", **options)
    try:
        logits = engine.score(SCORED)
        completions = engine.generate(PROMPTS, [_params(i) for i in range(len(PROMPTS))])
        return logits, [c.token_ids for c in completions], engine.scheduler.num_preemptions
    finally:
        engine.close()


@pytest.mark.parametrize("family, ranks", [("llama", 2), ("llama", 4), ("qwen3", 2)])
def test_ranks_give_the_single_rank_logits_and_tokens(bundles, family, ranks):
    logits, tokens, _ = _outputs(bundles[family][1])
    tp_logits, tp_tokens, _ = _outputs(bundles[family][ranks])
    scale = float(np.abs(logits).max())
    assert np.abs(tp_logits - logits).max() <= 1e-5 * max(scale, 1.0), "logits differ beyond 1e-5"
    assert tp_tokens == tokens  # batched, greedy and seeded samples alike


def test_preemption_is_unchanged(bundles):
    one = _outputs(bundles["llama"][1], num_kv_blocks=12)  # 48 tokens of KV for 5 sequences of up to 32
    two = _outputs(bundles["llama"][2], num_kv_blocks=12)
    assert one[2] > 0, "the pool was meant to force preemption"
    assert two[1:] == one[1:]


def test_a_rank_killed_mid_run_stops_every_rank_with_one_message(bundles):
    engine = Engine.load(bundles["llama"][4], device="cpu")
    try:
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=40, ignore_eos=True))
        engine.step()
        engine.step()
        victim = engine.backend.workers.procs[2]
        victim.kill()
        start = time.monotonic()
        with pytest.raises(RankFailed) as failed:
            for _ in range(100):
                engine.step()
        assert time.monotonic() - start < 30
        assert str(failed.value) == "tensor parallel: rank 2 was killed by SIGKILL; stopped all 4 ranks"
        assert not any(p.is_alive() for p in engine.backend.workers.procs.values())
    finally:
        engine.close()


def test_run_streams_a_completion_from_a_tensor_parallel_bundle(bundles):
    result = CliRunner().invoke(main, ["run", str(bundles["llama"][2]), "--prompt", "hello", "--max-tokens", "4",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "2 cpu ranks" in result.output and "[length]" in result.output


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_a_missing_rank_file_is_named(bundles, tmp_path):
    bundle = _copy(bundles["llama"][2], tmp_path / "b.llmc")
    (bundle / "weights/rank1/model.safetensors").unlink()
    result = CliRunner().invoke(main, ["run", str(bundle), "--prompt", "hi", "--device", "cpu"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "weights/rank1/model.safetensors" in lines[0] and "missing" in lines[0]


@pytest.mark.parametrize("verify", ["full", "none"])
def test_a_rank_file_from_another_build_is_named(bundles, tmp_path, verify):
    bundle = _copy(bundles["llama"][2], tmp_path / "b.llmc")
    (bundle / "weights/rank1/model.safetensors").write_bytes(
        (bundles["llama"][4] / "weights/rank1/model.safetensors").read_bytes())
    with pytest.raises(BundleError, match=r"weights/rank1/model.safetensors: .*(sha256|the manifest says|another build)"):
        Engine.load(bundle, device="cpu", verify=verify)


def test_serve_exits_with_one_line_when_a_rank_dies(bundles, tmp_path):
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llmc.cli", "serve", str(bundles["llama"][2]), "--device", "cpu",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        model = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=5).read())["data"][0]["id"]
        body = json.dumps({"model": model, "prompt": "w5 w6", "max_tokens": 4}).encode()
        workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True, text=True).stdout.split()
        assert workers, "no rank processes under the server"
        for pid in workers:
            os.kill(int(pid), signal.SIGKILL)
        request = urllib.request.Request(url + "/v1/completions", body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=30)
        except OSError:
            pass  # the request fails: the ranks are gone
        assert server.wait(timeout=60) is not None
        output = server.stdout.read()
        assert "tensor parallel: rank" in output and "the server stops" in output
        assert "Traceback" not in output
    finally:
        if server.poll() is None:
            server.kill()
