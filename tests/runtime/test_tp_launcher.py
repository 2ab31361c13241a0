"""The tensor-parallel launcher and step broadcast with a fake backend (no bundle): real spawned
processes and a real gloo group, so a wrong input, a lost step or a hang shows up here."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from llmc.errors import BundleError
from llmc.runtime.tensor_parallel import RankFailed
from llmc.runtime.tensor_parallel.launcher import STOP_GRACE_S
from llmc.runtime.tensor_parallel.ranks import start_ranks

pytest.importorskip("torch")

KILL, RAISE = -7, -8  # input_ids[0] values that make rank 1 die in the step


class FakeBackend:
    """Each step all-reduces input_ids * (rank + 1): the sum is input_ids * N(N+1)/2 only when
    every rank got the same inputs."""

    name = "fake"

    def __init__(self, rank: int):
        self.rank, self.num_kv_blocks = rank, 10 + rank
        self.views = {"input_ids": np.zeros(4, np.int32), "temperature": np.zeros(4, np.float32)}

    def inputs(self, plan_name: str):
        return self.views

    def launch(self, plan_name: str, feed=(), want_logits: bool = False):
        import torch
        import torch.distributed as dist

        ids = self.views["input_ids"]
        if self.rank == 1 and ids[0] == KILL:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.rank == 1 and ids[0] == RAISE:
            raise ValueError("boom on purpose\nsecond line")
        total = torch.from_numpy(ids.astype(np.float32) * (self.rank + 1) + self.views["temperature"])
        dist.all_reduce(total)
        return total.numpy().astype(np.int64), None

    def wait(self, handle):
        return handle

    def close(self) -> None:
        pass


class FakeRank:
    device = "cpu"

    def __init__(self, fail_check: int = -1):
        self.fail_check = fail_check

    def check(self, rank: int):
        if rank == self.fail_check:
            raise BundleError(f"weights/rank{rank}/model.safetensors: listed in the manifest but missing")

    def open(self, checked, rank: int, rendezvous):
        return FakeBackend(rank)


def _step(backend, ids, temperature=0.0):
    views = backend.inputs("decode_b4")
    views["input_ids"][:] = ids
    views["temperature"][:] = temperature
    return backend.wait(backend.launch("decode_b4", [], False))[0]


def test_every_rank_runs_each_step_on_rank0s_inputs():
    backend = start_ranks(3, FakeRank(), None, timeout_s=60)
    try:
        assert backend.num_kv_blocks == 10  # the smallest rank's
        assert backend.world_size == 3
        for ids in ([1, 2, 3, 4], [5, 0, 7, 1], [9, 9, 9, 9]):
            assert _step(backend, ids, 0.5).tolist() == [6 * i + 1 for i in ids]  # 1.5 rounds down, x3 ranks
    finally:
        backend.close()
    assert [p.exitcode for p in backend.workers.procs.values()] == [0, 0]


@pytest.mark.parametrize("how, said", [(KILL, "rank 1 was killed by SIGKILL"),
                                       (RAISE, "rank 1 failed: ValueError: boom on purpose")])
def test_a_rank_that_dies_stops_every_rank_with_one_message(how, said):
    backend = start_ranks(3, FakeRank(), None, timeout_s=60)
    try:
        _step(backend, [1, 2, 3, 4])
        start = time.monotonic()
        with pytest.raises(RankFailed) as failed:
            _step(backend, [how, 1, 1, 1])
        assert time.monotonic() - start < 2 * STOP_GRACE_S + 5
        message = str(failed.value)
        assert said in message and "stopped all 3 ranks" in message and "\n" not in message
        assert not any(p.is_alive() for p in backend.workers.procs.values())
        with pytest.raises(RankFailed, match="rank 1"):  # the group is gone: every later step says so
            _step(backend, [1, 2, 3, 4])
    finally:
        backend.close()


def test_a_rank_that_fails_its_checks_stops_the_start():
    with pytest.raises(RankFailed, match=r"rank 2 failed: BundleError: weights/rank2/model.safetensors: listed"):
        start_ranks(3, FakeRank(fail_check=2), None, timeout_s=60)


def _ended(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line for line in f)  # a zombie has ended
    except FileNotFoundError:
        return True


def test_workers_end_when_rank0_is_killed():
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from test_tp_launcher import FakeRank
from llmc.runtime.tensor_parallel.ranks import start_ranks
if __name__ == "__main__":
    backend = start_ranks(3, FakeRank(), None, timeout_s=60)
    print(*[p.pid for p in backend.workers.procs.values()], flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    pids = [int(p) for p in run.stdout.split()]
    assert len(pids) == 2, run.stderr
    deadline = time.monotonic() + 10
    while not all(map(_ended, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(map(_ended, pids)), "a worker outlived its rank 0"
