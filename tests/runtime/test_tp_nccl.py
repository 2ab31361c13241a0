"""The cuda backend's NCCL side against a stand-in for nccl4py's bindings (no GPU): the communicator
made at load from rank 0's unique id, rank r's weights, and each plan's collective issued on the
backend's stream in step order, captured into the decode graphs."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from fake_cuda import (
    CUresult,
    FakeDriver,
    H,
    V,
    fake_driver,
    step_inputs,
    write_fake_bundle,
)
from llmc.artifacts import Bundle, BundleWriter
from llmc.errors import BundleError
from llmc.runtime.backends.cuda import CudaBackend
from llmc.runtime.backends.nccl import NCCL_MISSING, unique_id
from llmc.runtime.tensor_parallel.group import Rendezvous

STREAM = 0x5151  # the fake's stream handle, an int like cuda-python's CUstream converts to
UID = bytes(range(128))


class StandInNccl:
    """`nccl.bindings.nccl`'s calls, recorded; a collective is a record in the fake driver's stream,
    so a graph captured around it replays it."""

    class UniqueId:
        def __init__(self, raw: bytes):
            self.raw = raw

        @classmethod
        def from_buffer(cls, raw):
            return cls(bytes(raw))

        def __bytes__(self):
            return self.raw

    def __init__(self, driver):
        self.driver, self.calls = driver, []

    def get_unique_id(self):
        return self.UniqueId(UID)

    def comm_init_rank(self, nranks, uid, rank):
        self.calls.append(("comm_init_rank", nranks, bytes(uid), rank))
        return "comm"

    def _enqueue(self, name, *args):
        record = (name, None, None, 0, list(args))
        if self.driver.capturing is not None:
            self.driver.capturing.append(record)
        else:
            self.driver._execute(record)

    def all_reduce(self, send, recv, count, dtype, op, comm, stream):
        self._enqueue("ncclAllReduce", send, recv, count, dtype, op, comm, stream)

    def all_gather(self, send, recv, count, dtype, comm, stream):
        self._enqueue("ncclAllGather", send, recv, count, dtype, comm, stream)

    def comm_abort(self, comm):
        self.calls.append(("comm_abort", comm))

    def comm_destroy(self, comm):
        self.calls.append(("comm_destroy", comm))


class IntStreamDriver(FakeDriver):
    def cuDeviceGetCount(self):
        return CUresult.CUDA_SUCCESS, 2

    def cuStreamCreate(self, flags):
        self._rec("cuStreamCreate")
        return CUresult.CUDA_SUCCESS, STREAM


def _collective(op, send, recv, count):
    return {"node": op, "op": op, "provider": "nccl", "outputs": [recv], "args": [{"buffer": send}],
            "collective": {"op": op, "send": {"buffer": send}, "recv": {"buffer": recv}, "dtype": "float32",
                           "count": count}}


def write_tp_bundle(tmp_path, world=2):
    """The fake bundle split over `world` ranks: rank r's embedding table is rank 0's + r; an
    all_reduce after the embedding, an all_gather before sampling (prefill)."""
    single = Bundle.open(write_fake_bundle(tmp_path / "single.llmc") and tmp_path / "single.llmc")
    manifest = single.manifest
    with BundleWriter(tmp_path / "tp.llmc") as w:
        for rel in manifest["files"]:
            data = single.file(rel).read_bytes()
            if rel.startswith("weights/"):
                for rank in range(world):
                    w.write_bytes(f"weights/rank{rank}/model.safetensors", _shifted(data, rank))
            elif rel.startswith("plans/"):
                plan = json.loads(data)
                plan["steps"].insert(1, _collective("all_reduce", "x", "x", plan["num_tokens"] * H))
                if plan["kind"] == "prefill":
                    plan["steps"].insert(3, _collective("all_gather", "x", "logits", 16))
                w.write_json(rel, plan)
            else:
                w.write_bytes(rel, data)
        fields = {k: v for k, v in manifest.items() if k not in ("files", "format_version", "root_digest")}
        w.commit({**fields, "parallel": {"tensor_parallel_size": world}})
    return Bundle.open(tmp_path / "tp.llmc")


def _shifted(safetensors: bytes, rank: int) -> bytes:
    """The same file with the embedding table + rank (its 'embed' tensor is first in the data)."""
    n = int.from_bytes(safetensors[:8], "little") + 8
    table = np.frombuffer(safetensors[n : n + 4 * V * H], np.float32) + rank
    return safetensors[:n] + table.tobytes() + safetensors[n + 4 * V * H :]


def _open(bundle, rank, **kw):
    fake = IntStreamDriver(abi=fake_driver().abi, kernels=fake_driver().kernels)
    nccl = StandInNccl(fake)
    backend = CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=5, rank=rank, nccl_module=nccl,
                               rendezvous=Rendezvous(2, 10.0, nccl_unique_id=unique_id(nccl)), **kw)
    return backend, fake, nccl


@pytest.mark.parametrize("rank", [0, 1])
def test_each_rank_makes_its_communicator_from_rank0s_id_and_loads_its_own_weights(tmp_path, rank):
    bundle = write_tp_bundle(tmp_path)
    backend, fake, nccl = _open(bundle, rank, device_index=0)
    try:
        assert nccl.calls == [("comm_init_rank", 2, UID, rank)]
        assert fake.read(backend.weights, 4) == np.float32(rank + 1).tobytes()  # TABLE[0, 0] is 1, + rank
    finally:
        backend.close()
    assert nccl.calls[-1] == ("comm_destroy", "comm")


def test_collectives_run_on_the_step_stream_in_step_order_and_in_the_decode_graphs(tmp_path):
    bundle = write_tp_bundle(tmp_path)
    backend, fake, nccl = _open(bundle, 0)
    x, logits = (backend.arena + bundle.plan("prefill_t8")["buffers"][b]["offset"] for b in ("x", "logits"))
    try:
        fake.launches.clear()
        plan = bundle.plan("decode_b2")
        backend.run(plan, step_inputs(plan, [3, 9], [5, 17]), want_logits=False)  # a graph replay
        assert [r[0] for r in fake.launches] == ["embed_kernel", "ncclAllReduce", "kv_write_kernel", "sample_kernel"]
        assert fake.launches[1][4] == [x, x, 2 * H, 7, 0, "comm", STREAM]  # float32 = 7, sum = 0, 2 tokens x H
        fake.launches.clear()
        plan = bundle.plan("prefill_t8")
        backend.run(plan, step_inputs(plan, [3, 9], [5, 17]), want_logits=False)  # eager
        assert [r[0] for r in fake.launches] == ["embed_kernel", "ncclAllReduce", "kv_write_kernel", "ncclAllGather",
                                                 "sample_kernel"]
        assert fake.launches[1][4] == [x, x, 8 * H, 7, 0, "comm", STREAM]
        assert fake.launches[3][4] == [x, logits, 16, 7, "comm", STREAM]
        backend.abort()  # a peer died: the communicator is aborted, never destroyed
        assert nccl.calls[-1] == ("comm_abort", "comm")
    finally:
        backend.close()
    assert ("comm_destroy", "comm") not in nccl.calls


def test_a_collective_in_a_bundle_that_is_not_tensor_parallel_is_refused(tmp_path):
    bundle = write_tp_bundle(tmp_path)
    fake = IntStreamDriver(abi=fake_driver().abi, kernels=fake_driver().kernels)
    with pytest.raises(BundleError, match=r"decode_b1 step 1 \(all_reduce\): the plan has a collective step"):
        CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=5, rank=0)


def test_without_nccl4py_the_message_says_what_to_install(monkeypatch):
    for name in ("nccl", "nccl.bindings", "nccl.bindings.nccl"):
        monkeypatch.setitem(sys.modules, name, None)  # import fails, installed or not
    with pytest.raises(BundleError) as e:
        unique_id()
    assert str(e.value) == NCCL_MISSING
