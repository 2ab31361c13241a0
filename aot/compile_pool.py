"""Running one function over a list in forked worker processes, one per CPU.

A `KernelSpec` holds a Triton `JITFunction`, which need not pickle (a kernel module loaded from a
file path, an interpreter wrapper), so workers are forked: each inherits the function and the list
and is sent only indices; results and errors come back pickled. Without `fork`, or for one item or
one worker, the items run here, in order.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_job: tuple[Callable, Sequence] | None = None  # (fn, items), set in a worker when it starts


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_map(fn: Callable[[T], R], items: Sequence[T], workers: int | None, done: Callable[[int, R], None]) -> None:
    """`done(i, fn(items[i]))` for every item, in order of completion, from up to `workers` processes
    (None: one per CPU). The first error is raised after the items not yet started are dropped."""
    workers = min(cpu_count() if workers is None else workers, len(items))
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for i, item in enumerate(items):
            done(i, fn(item))
        return
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_adopt,
                               initargs=(fn, items))  # under fork, initargs are inherited, not pickled
    try:
        index = {pool.submit(_run, i): i for i in range(len(items))}
        for future in as_completed(index):
            done(index[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _adopt(fn: Callable, items: Sequence) -> None:
    global _job
    _job = (fn, items)


def _run(i: int):
    fn, items = _job
    return fn(items[i])
