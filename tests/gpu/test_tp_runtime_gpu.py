"""Tensor-parallel bundles on two GPUs over NCCL (marker gpu; skipped with fewer than 2 GPUs or
without nccl4py): the ranks together give the single-rank bundle's logits and greedy tokens, the
decode graphs hold their collectives, and a rank killed mid-run stops the run with one message."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

BUILD = dict(max_batch_size=4, max_seq_len=64, max_num_batched_tokens=32)
PROMPTS = [[(7 * i + 3 * j) % 200 + 3 for j in range(n)] for i, n in enumerate([1, 5, 9, 14])]
SCORED = [5, 17, 33, 101, 7, 9, 12, 200, 44]
TOLERANCE = {"float32": 1e-4, "bfloat16": 3e-2}  # max |tp - single| / max |single|: NCCL sums in its own order


@pytest.fixture(scope="module")
def target():
    torch = pytest.importorskip("torch")
    pytest.importorskip("nccl.bindings.nccl")
    if torch.cuda.device_count() < 2:
        pytest.skip(f"tensor parallelism needs 2 GPUs; this machine has {torch.cuda.device_count()}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_cuda_backend import gpu_target

    return gpu_target()


def _bundles(root: Path, target: str, dtype: str) -> dict[int, Path]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from llmc.aot.build import BuildConfig, build
    from tp_checkpoints import make_tp_checkpoint

    model = make_tp_checkpoint("llama", root / "hf")
    out = {}
    for n in (1, 2):
        out[n] = root / f"tp{n}.llmc"
        build(model, out[n], BuildConfig(target=target, dtype=dtype, tensor_parallel_size=n, **BUILD), use_cache=False)
    return out


def _run(bundle):
    from llmc.runtime import Engine, SamplingParams

    engine = Engine.load(bundle, device="cuda")
    try:
        logits = engine.score(SCORED)
        tokens = [c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_tokens=12, temperature=0.0,
                                                                               ignore_eos=True))]
        return logits, tokens, engine.load_summary
    finally:
        engine.close()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_two_ranks_give_the_single_rank_logits_and_tokens(tmp_path, target, dtype):
    bundles = _bundles(tmp_path, target, dtype)
    logits, tokens, _ = _run(bundles[1])
    tp_logits, tp_tokens, summary = _run(bundles[2])
    assert summary["tensor_parallel_size"] == 2 and summary["num_graphs"] > 0
    error = np.abs(tp_logits - logits).max() / np.abs(logits).max()
    assert error <= TOLERANCE[dtype], f"relative logits error {error:.2e} > {TOLERANCE[dtype]}"
    if dtype == "float32":
        assert tp_tokens == tokens
    else:
        assert (tp_logits.argmax(-1) == logits.argmax(-1)).mean() >= 0.9


def test_a_rank_killed_mid_run_stops_the_run_with_one_message(tmp_path, target):
    from llmc.runtime import Engine, SamplingParams
    from llmc.runtime.tensor_parallel import RankFailed

    engine = Engine.load(_bundles(tmp_path, target, "bfloat16")[2], device="cuda")
    try:
        for i, prompt in enumerate(PROMPTS):
            engine.add_request(f"r{i}", prompt, SamplingParams(max_tokens=50, ignore_eos=True))
        engine.step()
        engine.backend.workers.procs[1].kill()
        start = time.monotonic()
        with pytest.raises(RankFailed, match="^tensor parallel: rank 1 was killed by SIGKILL; stopped all 2 ranks$"):
            for _ in range(200):
                engine.step()
        assert time.monotonic() - start < 60
    finally:
        engine.close()
