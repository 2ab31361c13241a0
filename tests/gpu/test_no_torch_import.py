"""Serving on cuda imports neither torch nor triton nor transformers (marker gpu).

Each check runs in a fresh interpreter: load a cuda bundle, generate (or bench), then look at
sys.modules. The bundle is prepared by test_cuda_backend.prepare (in this process, which may
import torch to build it); the child only loads it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_cuda_backend import bundles_root, gpu_target, prepare  # noqa: E402

pytestmark = pytest.mark.gpu

CHECK = """
bad = [m for m in ("torch", "triton", "transformers") if m in sys.modules]
assert not bad, f"imported {bad}"
"""


def run_child(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return prepare(bundles_root(tmp_path_factory), "float32", gpu_target(), "qwen3") / "bundle"


def test_generate_on_cuda_imports_no_torch(bundle):
    out = run_child(f"""
import sys
from llmc.runtime import Engine, SamplingParams
engine = Engine.load({str(bundle)!r}, device="cuda")
(c,) = engine.generate([[3, 17, 45, 9, 120]], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
assert len(c.token_ids) == 8, c
print(engine.backend.load_summary)
engine.close()
{CHECK}
print("ok", c.token_ids)
""")
    assert "ok" in out


def test_bench_on_cuda_imports_no_torch_and_reports_the_floor(bundle, tmp_path):
    report = tmp_path / "bench.json"
    out = run_child(f"""
import sys
from llmc.cli.bench import bench
bench.main([{str(bundle)!r}, "--batch-size", "2", "--input-len", "8", "--output-len", "16",
            "--num-iters-warmup", "1", "--num-iters", "3", "--output-json", {str(report)!r}], standalone_mode=False)
{CHECK}
""")
    print(out)
    result = json.loads(report.read_text())
    latency = result["latency"]
    assert result["device"] == "cuda" and len(latency["latencies"]) == 3
    assert latency["copy_bandwidth"] > 1e11 and latency["decode_vs_floor"] > 0.5
    assert result["load"]["num_graphs"] > 0 and result["load"]["process_to_ready_s"] > 0
    assert "Avg latency:" in out and "x the floor" in out
