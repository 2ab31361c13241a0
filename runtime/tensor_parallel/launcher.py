"""Rank 0's side of the worker processes (ranks 1..N-1): spawn them, talk to each over a pipe,
watch that they live, stop them.

A thread waits on the workers' sentinels; the first worker to end unasked is the failure every
later call reports (a rank that dies takes its peers' collectives down with it, so later deaths
are consequences). `on_death` callbacks run on that thread: a GPU backend aborts its NCCL
communicator there, so a step blocked on a dead peer returns.
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from multiprocessing.connection import wait

from llmc.errors import UserError

SPAWN = multiprocessing.get_context("spawn")  # never fork: the parent may hold threads, a GPU context
STOP_GRACE_S = 5.0  # a worker asked to close gets this long before SIGTERM, then as long before SIGKILL
DEATH_GRACE_S = 2.0  # after a failed step, how long to wait for the worker that caused it to end


class RankFailed(UserError):
    """A rank ended (killed, an exception) or broke the group; all ranks have been stopped."""


class Workers:
    def __init__(self, world_size: int, target, args: tuple):
        """Start ranks 1..world_size-1, each running `target(rank, conn, *args)`."""
        self.procs, self.conns = {}, {}
        self.deaths: list[tuple[int, int | None]] = []  # (rank, exit code) in the order they ended
        self.errors: dict[int, str] = {}  # rank -> the error it reported
        self.on_death: list = []
        self._stopping = threading.Event()
        for rank in range(1, world_size):
            parent, child = SPAWN.Pipe()
            proc = SPAWN.Process(target=target, args=(rank, child, *args), name=f"llmc-rank{rank}", daemon=True)
            proc.start()
            child.close()
            self.procs[rank], self.conns[rank] = proc, parent
        self._watcher = threading.Thread(target=self._watch, name="llmc-rank-watcher", daemon=True)
        self._watcher.start()

    # -- messages ----------------------------------------------------------------------------

    def send(self, message) -> None:
        for conn in self.conns.values():
            try:
                conn.send(message)
            except (OSError, ValueError):  # the pipe is gone: the worker is
                raise self.failure() from None

    def expect(self, kind: str, timeout_s: float) -> dict[int, tuple]:
        """Each worker's next message, which must be `kind` (else the failure it reports)."""
        replies, deadline = {}, time.monotonic() + timeout_s
        for rank, conn in self.conns.items():
            proc = self.procs[rank]
            while not conn.poll():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.stop_with(f"rank {rank} did not answer within {timeout_s:.0f} s ({kind})")
                if not proc.is_alive() and not conn.poll():
                    raise self.failure()
                wait([conn, proc.sentinel], min(left, 1.0))
            try:
                message = conn.recv()
            except (EOFError, OSError):
                raise self.failure() from None
            if message[0] == "error":
                self.errors[rank] = message[1]
                raise self.failure()
            if message[0] != kind:
                raise self.stop_with(f"rank {rank} sent {message[0]!r}, expected {kind!r}")
            replies[rank] = message
        return replies

    # -- failures and stopping ---------------------------------------------------------------

    def _watch(self) -> None:
        alive = {proc.sentinel: rank for rank, proc in self.procs.items()}
        while alive and not self._stopping.is_set():
            for sentinel in wait(list(alive), 0.5):
                rank = alive.pop(sentinel)
                if self._stopping.is_set():
                    return
                self.procs[rank].join(1.0)  # its pipes close a moment before it can be reaped
                self.deaths.append((rank, self.procs[rank].exitcode))
                for callback in list(self.on_death):
                    try:
                        callback(rank)
                    except Exception:  # a callback must not stop the watch
                        pass

    def failure(self, cause: BaseException | None = None) -> RankFailed:
        """The error that names the rank at fault, after stopping every worker. `cause`: rank 0's own
        exception, blamed only when no worker ended within DEATH_GRACE_S."""
        deadline = time.monotonic() + DEATH_GRACE_S
        while not self.deaths and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.deaths or self.errors:
            rank, code = self.deaths[0] if self.deaths else (next(iter(self.errors)), None)
            self._read_error(rank)
            what = (f"rank {rank} failed: {self.errors[rank]}" if rank in self.errors
                    else f"rank {rank} was killed by {_signal_name(-code)}" if code is not None and code < 0
                    else f"rank {rank} exited with code {code}")
        else:
            what = f"rank 0 failed: {_one_line(cause)}" if cause is not None else "a rank stopped answering"
        return self.stop_with(what)

    def stop_with(self, what: str) -> RankFailed:
        self.stop()
        return RankFailed(f"tensor parallel: {what}; stopped all {len(self.procs) + 1} ranks")

    def _read_error(self, rank: int) -> None:
        conn = self.conns[rank]
        try:
            while conn.poll(0.2):
                message = conn.recv()
                if message[0] == "error":
                    self.errors.setdefault(rank, message[1])
        except (EOFError, OSError):
            pass

    def ask_to_close(self) -> None:
        self._stopping.set()  # workers that end from now on were asked to
        for conn in self.conns.values():
            try:
                conn.send(("close",))
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        """Ask each worker to close, then SIGTERM, then SIGKILL the ones still running."""
        self.ask_to_close()
        for escalate in (None, "terminate", "kill"):
            live = [p for p in self.procs.values() if p.is_alive()]
            for proc in live if escalate else ():
                getattr(proc, escalate)()
            deadline = time.monotonic() + STOP_GRACE_S
            for proc in live:
                proc.join(max(0.0, deadline - time.monotonic()))
        for conn in self.conns.values():
            conn.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
