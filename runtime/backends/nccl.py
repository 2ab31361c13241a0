"""NCCL for the GPU backends, through nccl4py's low-level bindings (`nccl.bindings.nccl`, raw
device pointers and streams): one communicator per rank, made at load from the unique id rank 0
draws, and each plan step's collective enqueued on the backend's stream. NCCL calls on a stream
are captured into CUDA graphs like kernel launches, so decode graphs hold their collectives."""

from __future__ import annotations

from dataclasses import dataclass

from llmc.errors import BundleError

# ncclDataType_t and ncclRedOp_t (nccl.h): fixed by NCCL's ABI
NCCL_DTYPES = {"int8": 0, "uint8": 1, "int32": 2, "uint32": 3, "int64": 4, "uint64": 5,
               "float16": 6, "float32": 7, "float64": 8, "bfloat16": 9}
NCCL_SUM = 0
NCCL_MISSING = ("this bundle is tensor parallel: its GPU ranks talk through NCCL, which needs nccl4py and the NCCL "
                "library: pip install 'llmc[cuda,tp]'")


def nccl_bindings(module=None):
    """`nccl.bindings.nccl`, or `module` (a stand-in in tests)."""
    if module is not None:
        return module
    try:
        from nccl.bindings import nccl
    except ImportError:
        raise BundleError(NCCL_MISSING) from None
    return nccl


def unique_id(module=None) -> bytes:
    """Rank 0's ncclUniqueId, as the bytes every rank passes to `Communicator`."""
    return bytes(nccl_bindings(module).get_unique_id())


class Communicator:
    """One rank's NCCL communicator. Make it with the rank's GPU context current (NCCL uses the
    current device); every rank of the group makes its own at the same time."""

    def __init__(self, world_size: int, rank: int, uid: bytes, module=None):
        self.nccl = nccl_bindings(module)
        self.world_size, self.rank = world_size, rank
        self.comm = self.nccl.comm_init_rank(world_size, self.nccl.UniqueId.from_buffer(uid), rank)

    def all_reduce(self, send: int, recv: int, count: int, dtype: str, stream: int) -> None:
        self.nccl.all_reduce(send, recv, count, NCCL_DTYPES[dtype], NCCL_SUM, self.comm, stream)

    def all_gather(self, send: int, recv: int, count: int, dtype: str, stream: int) -> None:
        """`count` elements from each rank; recv holds world_size * count, rank-major."""
        self.nccl.all_gather(send, recv, count, NCCL_DTYPES[dtype], self.comm, stream)

    def abort(self) -> None:
        """End the communicator now, failing its calls in flight (a peer died); safe from another thread."""
        comm, self.comm = self.comm, None
        if comm is not None:
            self.nccl.comm_abort(comm)

    def destroy(self) -> None:
        comm, self.comm = self.comm, None
        if comm is not None:
            self.nccl.comm_destroy(comm)


@dataclass(frozen=True)
class PreparedCollective:
    """A plan step's "collective" entry with its pointers resolved: run_eager issues it in the
    place of a kernel launch (before the step's kernels)."""

    label: str
    comm: Communicator
    op: str
    send: int
    recv: int
    count: int
    dtype: str

    def issue(self, stream) -> None:
        getattr(self.comm, self.op)(self.send, self.recv, self.count, self.dtype, int(stream))


def prepare_collective(entry: dict, comm: Communicator | None, resolve, where: str) -> PreparedCollective:
    """The step's {"op", "send", "recv", "dtype", "count"} with `resolve(ref, where)` giving device addresses."""
    if comm is None:
        raise BundleError(f"{where}: the plan has a collective step but the bundle is not tensor parallel; "
                          "rebuild the bundle")
    if entry["op"] not in ("all_reduce", "all_gather") or entry["dtype"] not in NCCL_DTYPES:
        raise BundleError(f"{where}: collective {entry['op']!r} on {entry['dtype']} is not supported by this runtime; "
                          "rebuild the bundle with this llmc version")
    return PreparedCollective(f"{where} collective {entry['op']}", comm, entry["op"],
                              resolve(entry["send"], where), resolve(entry["recv"], where), int(entry["count"]),
                              entry["dtype"])
