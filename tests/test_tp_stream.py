"""A tensor-parallel build streams its weights too: each rank's shard is made from one checkpoint tensor as the
writer reaches it, so peak memory does not grow with the model (as tests/aot/test_stream.py checks for one rank)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

_CHILD = """
import sys
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
build(sys.argv[1], sys.argv[2], BuildConfig(max_seq_len=64, max_batch_size=2, max_num_batched_tokens=16,
                                            tensor_parallel_size=2), use_cache=False)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def _checkpoint(out: Path, layers: int) -> Path:
    from checkpoints import llama_of_layers

    return llama_of_layers(out, layers)


def _peak_rss(model: Path, out: Path) -> int:
    result = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(out)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_tensor_parallel_memory_does_not_grow_with_the_model(tmp_path):
    small, large = _checkpoint(tmp_path / "small", 3), _checkpoint(tmp_path / "large", 14)
    size = {m: (m / "model.safetensors").stat().st_size for m in (small, large)}
    rss = {m: _peak_rss(m, tmp_path / f"{m.name}.llmc") for m in (small, large)}
    grown, checkpoint_grown = rss[large] - rss[small], size[large] - size[small]
    # the largest tensor (lm_head, 8 MB whole, 4 MB a rank) is the same in both; no rank's copies may be held
    assert grown < 0.2 * checkpoint_grown, f"peak RSS grew {grown / 1e6:.0f} MB for {checkpoint_grown / 1e6:.0f} MB more weights"
    assert rss[small] > 100e6
