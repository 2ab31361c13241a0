"""The collective ops' native impls over torch.distributed with gloo, in real processes."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import llmc.aot.ir.ops  # noqa: F401  (registers the ops)

ops = torch.ops.llmc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x = torch.arange(6, dtype=torch.float32).reshape(2, 3) * (rank + 1)
        reduced = ops.all_reduce(x.to(torch.bfloat16))
        gathered = ops.all_gather(x, world)
        results[rank] = (reduced.float().tolist(), reduced.dtype == torch.bfloat16, gathered.tolist())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 3])
def test_all_reduce_and_all_gather_across_processes(world):
    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rank_main, args=(world, _free_port(), results), nprocs=world, join=True)
        results = dict(results)
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    expected_sum = (x * sum(range(1, world + 1))).tolist()
    expected_gather = torch.cat([x * (r + 1) for r in range(world)], dim=-1).tolist()
    for rank in range(world):
        reduced, kept_dtype, gathered = results[rank]
        assert reduced == expected_sum and kept_dtype
        assert gathered == expected_gather


def test_one_rank_is_the_identity():
    x = torch.randn(3, 5)
    torch.testing.assert_close(ops.all_reduce(x), x)
    torch.testing.assert_close(ops.all_gather(x, 1), x)


def test_the_traced_shape_of_all_gather():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = ops.all_gather(torch.empty(4, 7), 3)
    assert tuple(out.shape) == (4, 21)
