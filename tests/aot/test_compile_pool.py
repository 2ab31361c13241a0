"""pool_map: forked workers that need nothing pickled but results, in plain Python (no compiles)."""

from __future__ import annotations

import os

import pytest

from llmc.aot.compile_pool import cpu_count, pool_map


class Unpicklable:  # like a JITFunction from a module loaded by path
    def __init__(self, n):
        self.n = n

    def __reduce__(self):
        raise TypeError("cannot pickle")


def test_workers_get_indices_and_return_every_result():
    items = [Unpicklable(n) for n in range(7)]
    scale = 3
    got = {}
    pool_map(lambda item: (item.n * scale, os.getpid()), items, 3, lambda i, r: got.__setitem__(i, r))
    assert sorted(got) == list(range(7)) and [got[i][0] for i in range(7)] == [3 * n for n in range(7)]
    assert os.getpid() not in {pid for _, pid in got.values()}


@pytest.mark.parametrize("items, workers", [([1], None), ([1, 2, 3], 1), ([], None)])
def test_no_item_one_item_or_one_worker_runs_here_in_order(items, workers):
    got = []
    pool_map(lambda n: (n, os.getpid()), items, workers, lambda i, r: got.append((i, r)))
    assert got == [(i, (n, os.getpid())) for i, n in enumerate(items)]


@pytest.mark.parametrize("cpus, forks", [(1, False), (2, True)])
def test_two_workers_fork_and_no_count_means_one_per_cpu(monkeypatch, cpus, forks):
    import llmc.aot.compile_pool as compile_pool

    monkeypatch.setattr(compile_pool, "cpu_count", lambda: cpus)
    got = []
    pool_map(lambda n: os.getpid(), [0, 1, 2, 3], None, lambda i, pid: got.append(pid))
    assert len(got) == 4 and (os.getpid() not in got) == forks
    got.clear()
    pool_map(lambda n: os.getpid(), [0, 1], 2, lambda i, pid: got.append(pid))
    assert os.getpid() not in got


def test_a_worker_error_reaches_the_caller():
    def check(n):
        if n == 2:
            raise ValueError(f"item {n} is bad")
        return n

    with pytest.raises(ValueError, match="^item 2 is bad$"):
        pool_map(check, [0, 1, 2, 3], 2, lambda i, r: None)


def test_cpu_count_is_the_cpus_this_process_may_use():
    assert 1 <= cpu_count() <= (os.cpu_count() or 1)
