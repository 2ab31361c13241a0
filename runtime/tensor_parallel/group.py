"""How the ranks of one bundle find each other: on the cpu backend a gloo process group over a
TCP store on loopback that rank 0 hosts; on GPUs an NCCL communicator (runtime/backends/nccl.py)
made inside each rank's backend from the unique id rank 0 draws. `Rendezvous` is what rank 0
hands every worker to get there; it is small and picklable."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

GPU_DEVICES = ("cuda", "hip")


@dataclass(frozen=True)
class Rendezvous:
    world_size: int
    timeout_s: float
    store_port: int = 0  # cpu: rank 0's TCP store on 127.0.0.1
    nccl_unique_id: bytes = b""  # cuda: from rank 0's ncclGetUniqueId


def host_rendezvous(device: str, world_size: int, timeout_s: float):
    """Rank 0's side: (the rendezvous to give the workers, the TCP store to keep open or None)."""
    if device in GPU_DEVICES:
        os.environ["NCCL_NVLS_ENABLE"] = "0"  # inherited by the workers, which are spawned after this
        from llmc.runtime.backends.nccl import unique_id

        return Rendezvous(world_size, timeout_s, nccl_unique_id=unique_id()), None
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, world_size, True, timeout=timedelta(seconds=timeout_s),
                          wait_for_workers=False)
    return Rendezvous(world_size, timeout_s, store_port=store.port), store


def join_group(device: str, rank: int, rendezvous: Rendezvous, store=None) -> None:
    """The cpu backend's collectives run on torch.distributed's default process group; GPU backends
    make their communicator at load instead."""
    if device in GPU_DEVICES:
        return
    import torch.distributed as dist

    timeout = timedelta(seconds=rendezvous.timeout_s)
    if store is None:
        store = dist.TCPStore("127.0.0.1", rendezvous.store_port, rendezvous.world_size, False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=rendezvous.world_size, timeout=timeout)


def leave_group(device: str) -> None:
    if device in GPU_DEVICES:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
