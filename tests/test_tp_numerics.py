"""The sharding math, before a tensor-parallel runtime exists: N gloo processes each run the shared plans with
the ops' native functions on their rank's weights and KV cache; their logits equal the single-rank bundle's
within 1e-5 (float32), greedy tokens identical, on every rank, for a prefill and the decode step after it."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from checkpoints import FAMILIES
from tp_checkpoints import build_tp, make_tp_checkpoint

PROMPT = [1, 17, 5, 203, 44, 9, 120, 77, 3, 150]
PADS = {"slot_mapping": -1, "top_p": 1.0}  # docs/FORMAT.md's input padding


def _inputs(plan: dict, values: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, spec in plan["inputs"].items():
        array = np.full(spec["shape"], PADS.get(key, 0), dtype=spec["dtype"])
        if key in values:
            v = np.asarray(values[key], dtype=spec["dtype"])
            array[tuple(slice(0, n) for n in v.shape)] = v
        out[key] = torch.from_numpy(array)
    return out


def _run(plan: dict, weights: dict, kv: list, inputs: dict) -> dict:
    """The plan's steps with the native impls, every buffer its own tensor."""
    from llmc.aot.ir import OPS

    buffers: dict[str, torch.Tensor] = {}

    def resolve(ref):
        if isinstance(ref, list):
            return [resolve(r) for r in ref]
        if "buffer" in ref:
            return buffers[ref["buffer"]]
        if "input" in ref:
            return inputs[ref["input"]]
        if "weight" in ref:
            return weights[ref["weight"]]
        if "kv_cache" in ref:
            return kv[ref["layer"]][ref["kv_cache"] == "v"]
        return ref["const"]

    with torch.no_grad():
        for step in plan["steps"]:
            result = OPS[step["op"]].impls[step["provider"]](*(resolve(a) for a in step["args"]))
            outs = [] if result is None else [result] if isinstance(result, torch.Tensor) else list(result)
            buffers.update(zip(step["outputs"], outs))
    return {k: buffers[v].clone() for k, v in plan["outputs"].items()}


def _steps(bundle_dir, weights_file: str, decode_token: int | None = None) -> list[dict]:
    """Prefill PROMPT (logits at positions 3 and last), then decode one token; returns both steps' outputs."""
    import safetensors.torch

    from llmc.artifacts import Bundle

    with Bundle.open(bundle_dir) as bundle:
        manifest = bundle.manifest
        prefill, decode = bundle.plan("prefill_t16"), bundle.plan("decode_b1")
    weights = safetensors.torch.load_file(str(bundle_dir / weights_file))
    layout = manifest["kv_cache"]
    blocks = prefill["max_blocks_per_seq"]
    shape = (blocks, layout["block_size"], layout["num_kv_heads"], layout["head_dim"])
    kv = [(torch.zeros(shape), torch.zeros(shape)) for _ in range(layout["num_layers"])]
    n = len(PROMPT)
    first = _run(prefill, weights, kv, _inputs(prefill, {
        "input_ids": PROMPT, "positions": range(n), "slot_mapping": range(n), "block_tables": [list(range(blocks))],
        "seq_lens": [n], "query_start_loc": [0, n, n], "logits_indices": [3, n - 1]}))
    token = int(first["next_tokens"][1]) if decode_token is None else decode_token
    second = _run(decode, weights, kv, _inputs(decode, {
        "input_ids": [token], "positions": [n], "slot_mapping": [n], "block_tables": [list(range(blocks))],
        "seq_lens": [n + 1], "query_start_loc": [0, 1], "logits_indices": [0]}))
    return [first, second]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, size: int, port: int, bundle_dir, decode_token: int, results):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        steps = _steps(bundle_dir, f"weights/rank{rank}/model.safetensors", decode_token)
        results[rank] = [{k: v.tolist() for k, v in s.items() if k in ("logits", "next_tokens")} for s in steps]
    finally:
        dist.destroy_process_group()


CASES = [(f, size) for size in (2, 4) for f in sorted(FAMILIES)]


@pytest.mark.parametrize("family, size", CASES)
def test_ranks_together_compute_the_single_rank_logits(tmp_path, family, size):
    import torch.multiprocessing as mp

    model = make_tp_checkpoint(family, tmp_path / "hf")
    build_tp(model, tmp_path / "tp1", 1)
    build_tp(model, tmp_path / "tp", size)
    expected = _steps(tmp_path / "tp1", "weights/model.safetensors")
    token = int(expected[0]["next_tokens"][1])
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(size, _free_port(), tmp_path / "tp", token, results), nprocs=size, join=True)
        results = dict(results)
    for rank in range(size):
        for step, (want, got) in enumerate(zip(expected, results[rank])):
            torch.testing.assert_close(torch.tensor(got["logits"]), want["logits"], rtol=1e-5, atol=1e-5,
                                       msg=lambda m: f"rank {rank} step {step}: {m}")
            assert got["next_tokens"] == want["next_tokens"].tolist(), f"rank {rank} step {step}: greedy tokens differ"
