"""A worker process: rank r of a tensor-parallel bundle. It opens its own backend on rank r's
weights and then launches whatever plan rank 0 sends, with rank 0's inputs, until told to close.

Messages from rank 0: ("join",) once every rank passed its checks; ("launch", plan name, step, feed),
`step` the rows of its inputs that the step uses (inputs.py); ("run", plan name, inputs); ("close",).
To rank 0: ("checked",), ("ready", num_kv_blocks), or ("error", one line) just before exiting with
code 1. A worker whose rank 0 is gone exits.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass
from multiprocessing import parent_process
from multiprocessing.connection import wait

from .group import GPU_DEVICES, join_group, leave_group
from .inputs import unpack_inputs


@dataclass(frozen=True)
class BundleRank:
    """How a worker opens its rank of a bundle: the bundle directory (rank 0 verified it), the
    backend class rank 0 uses and rank 0's backend options."""

    bundle_dir: str
    device: str
    backend_class: type
    options: dict

    def check(self, rank: int):
        from llmc.artifacts import Bundle

        bundle = Bundle.open(self.bundle_dir, verify="none")
        if self.device in GPU_DEVICES:
            self.backend_class.check_device(bundle.manifest, device_index=self.options.get("device_index", 0) + rank)
        return bundle

    def open(self, checked, rank: int, rendezvous):
        return self.backend_class.open(checked, rank=rank, rendezvous=rendezvous, **self.options)


def worker_main(rank: int, conn, spec, rendezvous) -> None:
    """Rank `rank`'s process: `spec.check(rank)`, then (once every rank is checked) `spec.open`,
    then the steps rank 0 sends over `conn`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: rank 0 decides
    _exit_with_parent()
    backend = None
    try:
        checked = spec.check(rank)
        conn.send(("checked",))
        if conn.recv()[0] != "join":
            return
        join_group(spec.device, rank, rendezvous)
        backend = spec.open(checked, rank, rendezvous)
        conn.send(("ready", backend.num_kv_blocks))
        _serve(backend, conn, checked)
    except EOFError:  # rank 0 is gone
        pass
    except BaseException as e:
        lines = str(e).strip().splitlines()
        try:
            conn.send(("error", f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__))
        except (OSError, ValueError):
            pass
        os._exit(1)  # skip interpreter teardown: a torch or NCCL call may still hold its peers
    finally:
        if backend is not None:
            backend.close()
        leave_group(spec.device)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # done: an interpreter teardown with torch loaded takes seconds


def _serve(backend, conn, bundle) -> None:
    pending = None  # the last launch, waited for after the next one is enqueued (as rank 0 does)
    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "launch":
            _, plan_name, step, feed = message
            unpack_inputs(step, backend.inputs(plan_name))
            handle = backend.launch(plan_name, feed, False)
            if pending is not None:
                backend.wait(pending)
            pending = handle
        elif kind == "run":
            _, plan_name, inputs = message
            backend.run(bundle.plan(plan_name), inputs, False)
        elif kind == "close":
            if pending is not None:
                backend.wait(pending)
            return
        else:
            raise ValueError(f"unknown message {kind!r} from rank 0")


def _exit_with_parent() -> None:
    """End this worker when rank 0's process ends, even while it is blocked in a collective."""
    parent = parent_process()
    if parent is None:
        return

    def watch():
        wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="llmc-parent-watcher", daemon=True).start()
