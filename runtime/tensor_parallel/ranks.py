"""Rank 0 of a tensor-parallel bundle: `TensorParallelBackend` speaks the runner's protocol
(`inputs`, `launch`, `wait`, `run`) over rank 0's own backend and sends each step to the workers
before launching it here, so every rank launches the same plan on the same inputs; the plans'
collectives do the rest. Rank 0 reads the outputs (every rank samples the same tokens from the
gathered logits, so tokens fed on the device agree too).

Any failure while the ranks work together is fatal: a rank that died left its peers inside a
collective, so the group cannot go on. Every later call raises the same `RankFailed`.
"""

from __future__ import annotations

import os
import sys

from llmc.errors import BundleError

from .group import GPU_DEVICES, host_rendezvous, join_group, leave_group
from .inputs import pack_inputs
from .launcher import RankFailed, Workers
from .layout import check_rank_weights, tensor_parallel_size
from .worker import BundleRank, worker_main

TIMEOUT_S = 300.0  # loading a rank, and the longest a collective waits for a live but silent peer


def open_ranks(bundle, device: str, backend_class, *, timeout_s: float = TIMEOUT_S, **options):
    """Start ranks 1..N-1 of `bundle` as processes and open rank 0's backend here."""
    world = tensor_parallel_size(bundle.manifest)
    check_rank_weights(bundle)
    if device in GPU_DEVICES:  # one GPU per rank: refuse before starting any
        last = options.get("device_index", 0) + world - 1
        try:
            backend_class.check_device(bundle.manifest, last, options.get("driver_module"))
        except BundleError as e:
            raise BundleError(f"this bundle runs on {world} GPUs, one per tensor-parallel rank; GPU {last}: {e}") from None
    spec = BundleRank(str(bundle.path), device, backend_class, options)
    return start_ranks(world, spec, bundle, timeout_s)


def start_ranks(world: int, spec, checked, timeout_s: float = TIMEOUT_S) -> TensorParallelBackend:
    """Spawn ranks 1..world-1 running `spec` (worker.BundleRank's protocol), open rank 0 here from
    `checked` (what `spec.check(0)` would give), and return rank 0's view of them all."""
    device = spec.device
    rendezvous, store = host_rendezvous(device, world, timeout_s)
    workers = Workers(world, worker_main, (spec, rendezvous))
    local = None
    try:
        workers.expect("checked", timeout_s)
        workers.send(("join",))
        join_group(device, 0, rendezvous, store)
        if device in GPU_DEVICES:
            workers.on_death.append(lambda rank: _abort_gpu_rank0(local, rank, workers))
        local = spec.open(checked, 0, rendezvous)
        ready = workers.expect("ready", timeout_s)
    except BaseException as e:  # a worker's failure names its rank; rank 0's own error stays itself
        failure = e if isinstance(e, RankFailed) else workers.failure(e)
        _close_quietly(local, device, abort=True)
        if failure is e or workers.deaths or workers.errors:
            raise failure from None
        raise
    num_kv_blocks = min([local.num_kv_blocks] + [reply[1] for reply in ready.values()])
    return TensorParallelBackend(local, workers, device, num_kv_blocks, store)


class TensorParallelBackend:
    def __init__(self, local, workers: Workers, device: str, num_kv_blocks: int, store=None):
        self.local, self.workers, self.device = local, workers, device
        self.world_size = len(workers.procs) + 1
        self.num_kv_blocks = num_kv_blocks  # what every rank holds
        self.name = f"{self.world_size} {local.name} ranks"
        self.load_summary = {**getattr(local, "load_summary", {}), "tensor_parallel_size": self.world_size}
        self._store = store  # rank 0 hosts the cpu group's TCP store
        self._failed: RankFailed | None = None
        self._closed = False
        if hasattr(local, "measure_copy_bandwidth"):  # bench's decode floor: one GPU's bandwidth
            self.measure_copy_bandwidth = local.measure_copy_bandwidth

    def inputs(self, plan_name: str):
        self._check()
        return self.local.inputs(plan_name)

    def launch(self, plan_name: str, feed=(), *wants, **kw_wants):
        """`wants` (logits, logprobs, ...): what rank 0 copies back; the workers copy back nothing."""
        self._check()
        step = pack_inputs(self.local.inputs(plan_name))
        return self._together(lambda: self.local.launch(plan_name, feed, *wants, **kw_wants),
                              ("launch", plan_name, step, list(feed)))

    def wait(self, handle):
        self._check()
        return self._together(lambda: self.local.wait(handle))

    def run(self, plan: dict, inputs: dict, want_logits: bool):
        self._check()
        return self._together(lambda: self.local.run(plan, inputs, want_logits), ("run", plan["name"], dict(inputs)))

    def _together(self, here, message=None):
        try:
            if message is not None:
                self.workers.send(message)
            result = here()
            if not self.workers.deaths:
                return result
            self._failed = self.workers.failure()  # a step a rank died in (an aborted NCCL call) is not to be read
        except RankFailed as e:
            self._failed = e
        except Exception as e:
            self._failed = self.workers.failure(e)
        self._close_local(abort=True)  # the peers are gone: NCCL's teardown must not wait for them
        raise self._failed

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise ValueError("the backend is closed")

    def _close_local(self, abort: bool = False) -> None:
        _close_quietly(self.local, self.device, abort)
        self._store = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._failed is None:  # every rank tears down together (NCCL's teardown may wait for the peers)
            self.workers.ask_to_close()
            self._close_local()
            self.workers.stop()


def _abort_gpu_rank0(local, rank: int, workers: Workers) -> None:
    """A worker died (the watcher thread): abort rank 0's communicator so a step blocked on the dead
    peer returns. While rank 0 is still loading, NCCL's init and warm-up cannot be interrupted: say why
    and end the process rather than hang."""
    if local is not None:
        local.abort()
        return
    sys.stderr.write(f"error: tensor parallel: rank {rank} ended while the ranks were loading; stopping all "
                     f"{len(workers.procs) + 1} ranks\n")
    sys.stderr.flush()
    workers.stop()
    os._exit(1)


def _close_quietly(local, device: str, abort: bool = False) -> None:
    try:
        if local is not None:
            if abort and hasattr(local, "abort"):
                local.abort()
            local.close()
    except Exception:  # the first error is the one to report
        pass
    finally:
        leave_group(device)
