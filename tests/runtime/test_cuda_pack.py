"""The cuda backend against a fake of cuda-python's driver module: no GPU needed.

The fake keeps device memory in bytearrays, decodes every cuLaunchKernel's parameters by the
kernel's ABI (as the driver copies them), runs a Python stand-in for each kernel, and records
stream capture, so these tests check the bytes of the packed arguments, the pointers computed
from arena offsets, weights, inputs and the KV pool, the scratch pointers, and that a decode
step is exactly one graph launch between two copies.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from llmc.artifacts import Bundle, BundleWriter, sha256_bytes
from llmc.errors import BundleError
from llmc.runtime.backends.cuda import CudaBackend
from llmc.runtime.backends.cuda_driver import CudaError, Driver
from llmc.runtime.backends.cuda_launch import ParamBlock, pack_scalar, prepare_launch
from llmc.runtime.backends.cuda_memory import KvSpec, kv_blocks_for_memory, layout_weights, upload_weights

# ---- a fake driver module --------------------------------------------------------------------


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_OUT_OF_MEMORY = 2
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_NO_BINARY_FOR_GPU = 209
    CUDA_ERROR_ILLEGAL_ADDRESS = 700


def _enum(**names):
    return SimpleNamespace(**names)


OK = (CUresult.CUDA_SUCCESS,)
SIZES = {"i1": 1, "i8": 1, "i16": 2, "i32": 4, "i64": 8, "u32": 4, "u64": 8, "fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}
FORMATS = {"i32": "<i", "i64": "<q", "u32": "<I", "u64": "<Q", "fp32": "<f", "fp64": "<d", "i8": "<b", "i16": "<h"}


class FakeDriver:
    """Enough of `cuda.bindings.driver` for CudaBackend, with memory and kernels emulated in Python."""

    CUresult = CUresult
    CUdevice_attribute = _enum(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=76,
                               CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN=97)
    CUfunction_attribute = _enum(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK=0, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES=1,
                                 CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8)
    CUstreamCaptureMode = _enum(CU_STREAM_CAPTURE_MODE_GLOBAL=0, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL=1)
    CUstream_flags = _enum(CU_STREAM_DEFAULT=0, CU_STREAM_NON_BLOCKING=1)
    CUevent_flags = _enum(CU_EVENT_DEFAULT=0, CU_EVENT_DISABLE_TIMING=2)

    def __init__(self, cc=(9, 0), name="NVIDIA H100 80GB HBM3", total=1 << 30, init_error=None, abi=None, kernels=None):
        self.cc, self.name, self.total, self.init_error = cc, name, total, init_error
        self.abi = abi or {}  # kernel binary (or name) -> ABI types, to decode launches like the driver does
        self.kernels = kernels or {}  # kernel name -> fn(driver, grid, values)
        self.mem: dict[int, bytearray] = {}
        self.host: dict[int, ctypes.Array] = {}
        self.next_addr = 0x7F00_0000_0000
        self.calls: list[str] = []
        self.launches: list[tuple] = []  # (name, grid, block, shared, values) as executed
        self.capturing = None
        self.fail: dict[str, CUresult] = {}  # function name -> error to return
        self.modules_loaded: list[bytes] = []
        self.func_attrs_set: list[tuple] = []
        self.ctx_set_threads: list[int] = []
        self.graphs_instantiated = 0
        self.live_graph_execs = 0

    def __getattr__(self, name):
        if name.startswith("cu"):
            raise AttributeError(f"FakeDriver has no {name}")
        raise AttributeError(name)

    def _rec(self, name):
        self.calls.append(name)
        return self.fail.get(name)

    # memory helpers
    def find(self, addr: int) -> tuple[bytearray, int]:
        for base, buf in self.mem.items():
            if base <= addr < base + len(buf):
                return buf, addr - base
        raise AssertionError(f"address {addr:#x} is not in any device allocation")

    def read(self, addr, n) -> bytes:
        buf, off = self.find(addr)
        assert off + n <= len(buf), "read past the allocation"
        return bytes(buf[off:off + n])

    def write(self, addr, data: bytes) -> None:
        buf, off = self.find(addr)
        assert off + len(data) <= len(buf), "write past the allocation"
        buf[off:off + len(data)] = data

    # device
    def cuInit(self, flags):
        err = self._rec("cuInit")
        return (err or self.init_error or CUresult.CUDA_SUCCESS,)

    def cuDeviceGetCount(self):
        return CUresult.CUDA_SUCCESS, 1

    def cuDeviceGet(self, ordinal):
        return CUresult.CUDA_SUCCESS, ordinal

    def cuDeviceGetName(self, length, dev):
        return CUresult.CUDA_SUCCESS, self.name.encode() + b"\0" * (length - len(self.name))

    def cuDeviceGetAttribute(self, attr, dev):
        values = {75: self.cc[0], 76: self.cc[1], 97: 232448}
        return CUresult.CUDA_SUCCESS, values[attr]

    def cuDeviceTotalMem(self, dev):
        return CUresult.CUDA_SUCCESS, self.total

    def cuDevicePrimaryCtxRetain(self, dev):
        self._rec("cuDevicePrimaryCtxRetain")
        return CUresult.CUDA_SUCCESS, "ctx"

    def cuDevicePrimaryCtxRelease(self, dev):
        self._rec("cuDevicePrimaryCtxRelease")
        return OK

    def cuCtxSetCurrent(self, ctx):
        self._rec("cuCtxSetCurrent")
        self.ctx_set_threads.append(threading.get_ident())
        return OK

    def cuMemGetInfo(self):
        used = sum(len(b) for b in self.mem.values())
        return CUresult.CUDA_SUCCESS, self.total - used, self.total

    def cuGetErrorString(self, err):
        return CUresult.CUDA_SUCCESS, b"fake description"

    # memory
    def cuMemAlloc(self, n):
        err = self._rec("cuMemAlloc")
        if err or n > self.cuMemGetInfo()[1]:
            return err or CUresult.CUDA_ERROR_OUT_OF_MEMORY, 0
        addr = self.next_addr
        # poison small allocations: nothing may rely on fresh memory being zero
        self.mem[addr] = bytearray(b"\xee" * n) if n <= 1 << 20 else bytearray(n)
        self.next_addr += (n + 0xFFFF) // 0x10000 * 0x10000 + 0x10000
        return CUresult.CUDA_SUCCESS, addr

    def cuMemFree(self, addr):
        self._rec("cuMemFree")
        del self.mem[int(addr)]
        return OK

    def cuMemHostAlloc(self, n, flags):
        self._rec("cuMemHostAlloc")
        buf = (ctypes.c_ubyte * n)()
        self.host[ctypes.addressof(buf)] = buf
        return CUresult.CUDA_SUCCESS, ctypes.addressof(buf)

    def cuMemFreeHost(self, ptr):
        self._rec("cuMemFreeHost")
        del self.host[ptr]
        return OK

    def cuMemsetD8Async(self, dst, value, n, stream):
        self._rec("cuMemsetD8Async")
        if n <= 1 << 20:
            self.write(dst, bytes([value]) * n)
        return OK

    def cuMemcpyHtoDAsync(self, dst, src, n, stream):
        self._rec("cuMemcpyHtoDAsync")
        self.write(dst, ctypes.string_at(src, n))
        return OK

    def cuMemcpyDtoHAsync(self, dst, src, n, stream):
        self._rec("cuMemcpyDtoHAsync")
        ctypes.memmove(dst, self.read(src, n), n)
        return OK

    def cuMemcpyDtoDAsync(self, dst, src, n, stream):
        self._rec("cuMemcpyDtoDAsync")
        if n <= 1 << 20:  # large copies only time the copy (bandwidth test): skip the work
            self.write(dst, self.read(src, n))
        return OK

    # streams, events
    def cuStreamCreate(self, flags):
        self._rec("cuStreamCreate")
        return CUresult.CUDA_SUCCESS, "stream"

    def cuStreamDestroy(self, s):
        self._rec("cuStreamDestroy")
        return OK

    def cuStreamSynchronize(self, s):
        return (self._rec("cuStreamSynchronize") or CUresult.CUDA_SUCCESS,)

    def cuEventCreate(self, flags):
        return CUresult.CUDA_SUCCESS, object()

    def cuEventRecord(self, ev, s):
        self._rec("cuEventRecord")
        return OK

    def cuEventSynchronize(self, ev):
        return OK

    def cuEventDestroy(self, ev):
        return OK

    def cuEventElapsedTime(self, a, b):
        return CUresult.CUDA_SUCCESS, 2.0

    # modules and launches
    def cuModuleLoadData(self, image):
        err = self._rec("cuModuleLoadData")
        if err:
            return err, None
        self.modules_loaded.append(bytes(image))
        return CUresult.CUDA_SUCCESS, SimpleNamespace(image=bytes(image))

    def cuModuleUnload(self, mod):
        self._rec("cuModuleUnload")
        return OK

    def cuModuleGetFunction(self, mod, name):
        assert isinstance(name, bytes)
        return CUresult.CUDA_SUCCESS, SimpleNamespace(name=name.decode(), image=mod.image)

    def cuFuncGetAttribute(self, attr, func):
        return CUresult.CUDA_SUCCESS, {0: 1024, 1: 0}[attr]

    def cuFuncSetAttribute(self, func, attr, value):
        self.func_attrs_set.append((func.name, attr, value))
        return OK

    def decode(self, func, params_addr):
        types = self.abi[func.image] if func.image in self.abi else self.abi[func.name]  # by binary, else by name
        ptrs = (ctypes.c_void_p * len(types)).from_address(params_addr)
        values = []
        for p, t in zip(ptrs, types):
            if t.startswith("*"):
                values.append(struct.unpack("<Q", ctypes.string_at(p, 8))[0])
                if values[-1]:
                    self.find(values[-1])  # every non-null pointer lies in a device allocation
            else:
                values.append(struct.unpack(FORMATS[t], ctypes.string_at(p, SIZES[t]))[0])
        return values

    def cuLaunchKernel(self, func, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        err = self._rec("cuLaunchKernel")
        if err:
            return (err,)
        assert isinstance(params, int) and extra == 0
        record = (func.name, (gx, gy, gz), (bx, by, bz), shared, self.decode(func, params))
        if self.capturing is not None:
            self.capturing.append(record)  # the driver copies the values at capture time
        else:
            self._execute(record)
        return OK

    def _execute(self, record):
        self.launches.append(record)
        name, grid, _, _, values = record
        if name in self.kernels:
            self.kernels[name](self, grid, values)

    # graphs
    def cuStreamBeginCapture(self, stream, mode):
        self._rec("cuStreamBeginCapture")
        assert mode == 1 and self.capturing is None
        self.capturing = []
        return OK

    def cuStreamEndCapture(self, stream):
        self._rec("cuStreamEndCapture")
        graph, self.capturing = self.capturing, None
        return CUresult.CUDA_SUCCESS, graph

    def cuGraphInstantiate(self, graph, flags):
        err = self._rec("cuGraphInstantiate")
        if err:
            return err, None
        self.graphs_instantiated += 1
        self.live_graph_execs += 1
        return CUresult.CUDA_SUCCESS, list(graph)

    def cuGraphUpload(self, g, s):
        return OK

    def cuGraphDestroy(self, g):
        return OK

    def cuGraphExecDestroy(self, g):
        self._rec("cuGraphExecDestroy")
        self.live_graph_execs -= 1
        return OK

    def cuGraphLaunch(self, graph_exec, stream):
        err = self._rec("cuGraphLaunch")
        if err:
            return (err,)
        for record in graph_exec:
            self._execute(record)
        return OK


# ---- a tiny bundle that the fake kernels compute on -----------------------------------------

V, H, BLOCK = 16, 4, 4  # vocab, hidden (= head_dim, one KV head), KV block size
INPUTS = ("input_ids", "positions", "slot_mapping", "block_tables", "seq_lens", "query_start_loc",
          "logits_indices", "temperature", "top_k", "top_p", "uniform")
ABI = {
    "embed_kernel": ["*i32", "*fp32", "*fp32", "*fp32", "i32", "*i8", "*i8"],
    "kv_write_kernel": ["*fp32", "*fp32", "*fp32", "*i32", "i32", "*i8", "*i8"],
    "sample_kernel": ["*fp32", "*i32", "*fp32", "*i32", "i32", "fp32", "i64", "*i8", "*i8"],
}
KERNEL_META = {"embed_kernel": {"shared": 0, "global_scratch_size": 0},
               "kv_write_kernel": {"shared": 65536, "global_scratch_size": 0},
               "sample_kernel": {"shared": 1024, "global_scratch_size": 32}}
BINARIES = {name: f"FAKE CUBIN {name}".encode() for name in ABI}
IDS = {name: sha256_bytes(b) for name, b in BINARIES.items()}


def _f32(fake, addr, n):
    return np.frombuffer(fake.read(addr, 4 * n), dtype=np.float32)


def _i32(fake, addr, n):
    return np.frombuffer(fake.read(addr, 4 * n), dtype=np.int32)


def embed_kernel(fake, grid, v):  # out[t] = table[ids[t]] * scale
    ids_p, table_p, scale_p, out_p, n, gs, ps = v
    assert gs == 0 and ps == 0
    ids, scale = _i32(fake, ids_p, n), _f32(fake, scale_p, H)
    for t, i in enumerate(ids):
        fake.write(out_p + 16 * t, (_f32(fake, table_p + 16 * int(i), H) * scale).astype(np.float32).tobytes())


def kv_write_kernel(fake, grid, v):  # k[slot] = v[slot] = x[t]
    x_p, k_p, v_p, slots_p, n, _, _ = v
    for t, slot in enumerate(_i32(fake, slots_p, n)):
        if slot >= 0:
            row = fake.read(x_p + 16 * t, 16)
            fake.write(k_p + 16 * int(slot), row)
            fake.write(v_p + 16 * int(slot), row)


def sample_kernel(fake, grid, v):  # token[r] = int(x[idx[r], 0]); logits[r] = one-hot of it
    x_p, idx_p, logits_p, out_p, n, temp, seed, gs, ps = v
    assert temp == 0.0 and seed == 2**40 + 3 and gs != 0 and gs % 128 == 0 and ps == 0
    for r, i in enumerate(_i32(fake, idx_p, n)):
        tok = int(_f32(fake, x_p + 16 * int(i), 1)[0])
        fake.write(out_p + 4 * r, struct.pack("<i", tok))
        fake.write(logits_p + 4 * V * r, np.eye(V, dtype=np.float32)[tok].tobytes())


def plan_json(name, kind, T, B, R, arena_extra=0):
    shapes = {"input_ids": [T], "positions": [T], "slot_mapping": [T], "block_tables": [B, 4], "seq_lens": [B],
              "query_start_loc": [B + 1], "logits_indices": [R], "temperature": [R], "top_k": [R], "top_p": [R],
              "uniform": [R]}
    floats = ("temperature", "top_p", "uniform")
    k = {"kv_cache": "k", "layer": 0}
    vv = {"kv_cache": "v", "layer": 0}
    return {
        "name": name, "kind": kind, "num_tokens": T, "num_seqs": B, "num_logits": R, "max_blocks_per_seq": 4,
        "arena_bytes": 768 + arena_extra,
        "inputs": {key: {"shape": shapes[key], "dtype": "float32" if key in floats else "int32"} for key in INPUTS},
        "buffers": {"x": {"offset": 0, "shape": [T, H], "dtype": "float32"},
                    "logits": {"offset": 256, "shape": [R, V], "dtype": "float32"},
                    "next": {"offset": 512, "shape": [R], "dtype": "int32"}},
        "outputs": {"logits": "logits", "next_tokens": "next"},
        "steps": [
            {"node": "embed", "op": "embedding", "provider": "triton", "outputs": ["x"],
             "args": [{"input": "input_ids"}, {"weight": "embed"}],
             "launches": [{"kernel": IDS["embed_kernel"], "grid": [T], "params": [
                 {"input": "input_ids"}, {"weight": "embed"}, {"weight": "scale"}, {"buffer": "x"},
                 {"scalar": T, "type": "i32"}]}]},
            {"node": "kv", "op": "kv_cache_write", "provider": "triton", "outputs": [],
             "args": [{"buffer": "x"}, {"buffer": "x"}, k, vv, {"input": "slot_mapping"}],
             "launches": [{"kernel": IDS["kv_write_kernel"], "grid": [T, 1], "params": [
                 {"buffer": "x"}, k, vv, {"input": "slot_mapping"}, {"scalar": T, "type": "i32"}]}]},
            {"node": "sample", "op": "sample", "provider": "triton", "outputs": ["next"],
             "args": [{"buffer": "x"}],
             "launches": [{"kernel": IDS["sample_kernel"], "grid": [R, 1, 1], "params": [
                 {"buffer": "x"}, {"input": "logits_indices"}, {"buffer": "logits"}, {"buffer": "next"},
                 {"scalar": R, "type": "i32"}, {"scalar": 0.0, "type": "fp32"}, {"scalar": 2**40 + 3, "type": "i64"}]}]},
        ],
    }


def safetensors_bytes(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    header, offset, data = {}, 0, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


TABLE = np.array([[(i + 1) % V, 0.5, 0.25, 2.0] for i in range(V)], dtype=np.float32)
WEIGHTS = [("embed", "F32", [V, H], TABLE.tobytes()), ("odd", "U8", [6], b"abcdef"),
           ("scale", "F32", [H], np.ones(H, dtype=np.float32).tobytes())]


def write_fake_bundle(out, target=("sm90", "cuda", 90)):
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", safetensors_bytes(WEIGHTS))
        for plan in (plan_json("decode_b1", "decode", 1, 1, 1), plan_json("decode_b2", "decode", 2, 2, 2),
                     plan_json("prefill_t8", "prefill", 8, 2, 2, arena_extra=256)):
            w.write_json(f"plans/{plan['name']}.json", plan)
        index = {}
        for name, types in ABI.items():
            index[IDS[name]] = {
                "file": f"kernels/{IDS[name]}.cubin", "name": name, "target": target[0],
                "params": [{"name": f"p{i}", "type": t} for i, t in enumerate(types)],
                "num_warps": 4, "num_ctas": 1, "shared": KERNEL_META[name]["shared"],
                "global_scratch_size": KERNEL_META[name]["global_scratch_size"], "global_scratch_align": 128,
                "profile_scratch_size": 0, "profile_scratch_align": 1}
            w.write_bytes(f"kernels/{IDS[name]}.cubin", BINARIES[name])
        w.write_json("kernels/index.json", {"kernels": index})
        w.write_json("impls.lock.json", {"nodes": {}})
        return w.commit({
            "llmc_version": "0.1.0", "target": {"name": target[0], "backend": target[1], "arch": target[2], "warp_size": 32},
            "model": {"architecture": "Qwen3ForCausalLM", "dtype": "float32", "vocab_size": V, "hidden_size": H,
                      "num_layers": 1, "num_q_heads": 1, "num_kv_heads": 1, "head_dim": H, "intermediate_size": 8,
                      "max_position_embeddings": 64, "eos_token_ids": [0], "bos_token_id": None, "sliding_window": 0},
            "build": {"dtype": "float32", "max_batch_size": 2, "max_seq_len": 16, "kv_block_size": BLOCK,
                      "max_num_batched_tokens": 8, "op_priority": {}, "decode_buckets": [1, 2], "prefill_buckets": [8]},
            "kv_cache": {"num_layers": 1, "block_size": BLOCK, "num_kv_heads": 1, "head_dim": H, "dtype": "float32"},
            "toolchain": {"triton": "3.9.0"}, "build_key": "k" * 64,
        })


@pytest.fixture
def bundle(tmp_path):
    write_fake_bundle(tmp_path / "b.llmc")
    with Bundle.open(tmp_path / "b.llmc") as b:
        yield b


def fake_driver(**kw):
    return FakeDriver(abi=ABI, kernels={"embed_kernel": embed_kernel, "kv_write_kernel": kv_write_kernel,
                                        "sample_kernel": sample_kernel}, **kw)


def step_inputs(plan, ids, slots, logits_indices=None):
    T, R = plan["num_tokens"], plan["num_logits"]
    inputs = {key: np.zeros(spec["shape"], dtype=spec["dtype"]) for key, spec in plan["inputs"].items()}
    inputs["input_ids"][: len(ids)] = ids
    inputs["slot_mapping"][:] = -1
    inputs["slot_mapping"][: len(slots)] = slots
    inputs["top_p"][:] = 1.0
    inputs["logits_indices"][:] = logits_indices if logits_indices is not None else np.arange(R) % T
    return inputs


# ---- packing ----------------------------------------------------------------------------------


def test_pack_scalar_bytes_for_each_type():
    assert pack_scalar(-1, "i32", "x") == b"\xff\xff\xff\xff"
    assert pack_scalar(2**40 + 3, "i64", "x") == struct.pack("<q", 2**40 + 3)
    assert pack_scalar(1.5, "fp32", "x") == struct.pack("<f", 1.5)
    assert pack_scalar(7, "fp32", "x") == struct.pack("<f", 7.0)
    assert pack_scalar(1.0, "bf16", "x") == b"\x80\x3f"
    assert pack_scalar(2**32 - 1, "u32", "x") == b"\xff\xff\xff\xff"
    assert pack_scalar(3.0, "i32", "x") == struct.pack("<i", 3)
    with pytest.raises(BundleError, match="does not fit a i32"):
        pack_scalar(2**31, "i32", "x")
    with pytest.raises(BundleError, match="integer parameter"):
        pack_scalar(0.5, "i64", "x")
    with pytest.raises(BundleError, match="not supported"):
        pack_scalar(1, "nvTmaDesc", "x")


def test_param_block_points_at_aligned_slots_holding_the_values():
    block = ParamBlock([struct.pack("<Q", 0xDEADBEEF00), struct.pack("<i", -5), struct.pack("<f", 0.25)])
    ptrs = (ctypes.c_void_p * 3).from_address(block.address)
    assert all(p % 8 == 0 for p in ptrs)
    assert ctypes.string_at(ptrs[0], 8) == struct.pack("<Q", 0xDEADBEEF00)
    assert ctypes.string_at(ptrs[1], 4) == struct.pack("<i", -5)
    assert block.raw(2, 4) == struct.pack("<f", 0.25)


def _entry(types, **kw):
    entry = {"name": "k", "file": "kernels/k.cubin", "params": [{"name": f"p{i}", "type": t} for i, t in enumerate(types)],
             "num_warps": 8, "num_ctas": 1, "shared": 100, "global_scratch_size": 0, "global_scratch_align": 1,
             "profile_scratch_size": 0, "profile_scratch_align": 1}
    entry.update(kw)
    return entry


def _resolve(ref, where):
    return {"buffer": 0x1000, "input": 0x2000, "weight": 0x3000, "kv_cache": 0x4000}[next(iter(ref))] + 16


def test_prepare_launch_resolves_pointers_and_appends_null_scratch():
    entry = _entry(["*bf16", "*fp32", "*i32", "*fp32", "*i8", "i32", "i64", "fp32", "*i8", "*i8"])
    params = [{"buffer": "t"}, {"weight": "w"}, {"input": "input_ids"}, {"kv_cache": "k", "layer": 0}, {"null": True},
              {"scalar": -7, "type": "i32"}, {"scalar": 1 << 33, "type": "i64"}, {"scalar": 1e-6, "type": "fp32"}]
    launch = prepare_launch({"kernel": "k", "grid": [5, 2], "params": params}, entry, "F", _resolve,
                            {"global": 0xAAA00, "profile": 0xBBB00}, "p step 0 (n)")
    assert launch.grid == (5, 2, 1) and launch.block_x == 256 and launch.shared == 100 and launch.func == "F"
    p = launch.params
    assert p.count == 10
    ptr = lambda i: struct.unpack("<Q", p.raw(i))[0]
    assert [ptr(i) for i in range(5)] == [0x1010, 0x3010, 0x2010, 0x4010, 0]
    assert p.raw(5, 4) == struct.pack("<i", -7)
    assert p.raw(6) == struct.pack("<q", 1 << 33)
    assert p.raw(7, 4) == struct.pack("<f", 1e-6)
    assert ptr(8) == 0 and ptr(9) == 0  # scratch sizes are 0: null pointers


def test_prepare_launch_passes_scratch_when_the_kernel_needs_it():
    entry = _entry(["*fp32", "*i8", "*i8"], global_scratch_size=64, profile_scratch_size=8)
    launch = prepare_launch({"kernel": "k", "grid": [3], "params": [{"buffer": "t"}]}, entry, "F", _resolve,
                            {"global": 0xAAA00, "profile": 0xBBB00}, "w")
    assert struct.unpack("<Q", launch.params.raw(1))[0] == 0xAAA00
    assert struct.unpack("<Q", launch.params.raw(2))[0] == 0xBBB00


@pytest.mark.parametrize("params, types, message", [
    ([{"buffer": "t"}], ["*fp32", "*fp32", "*i8", "*i8"], "passes 1 parameters; the kernel's ABI has 4"),
    ([{"scalar": 1, "type": "i32"}], ["*fp32", "*i8", "*i8"], "takes a pointer"),
    ([{"buffer": "t"}], ["i32", "*i8", "*i8"], "takes a i32 scalar"),
    ([{"scalar": 1.5, "type": "fp32"}], ["i32", "*i8", "*i8"], "does not match the kernel's i32"),
])
def test_prepare_launch_refuses_a_launch_that_does_not_match_the_abi(params, types, message):
    with pytest.raises(BundleError, match=message):
        prepare_launch({"kernel": "k", "grid": [1], "params": params}, _entry(types), "F", _resolve,
                       {"global": 0, "profile": 0}, "w")


def test_prepare_launch_refuses_clusters():
    with pytest.raises(BundleError, match="num_ctas=2"):
        prepare_launch({"kernel": "k", "grid": [1], "params": []}, _entry(["*i8", "*i8"], num_ctas=2), "F",
                       _resolve, {}, "w")


# ---- memory ----------------------------------------------------------------------------------


def test_weights_are_placed_256_aligned_and_uploaded_byte_exact_through_small_staging(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes(WEIGHTS))
    layout = layout_weights([path])
    assert [s.offset for s in layout.slots.values()] == [0, 256, 512]
    assert layout.data_bytes == 256 + 6 + 16 and layout.total_bytes == 768
    fake = FakeDriver()
    drv = Driver(fake)
    base = drv.alloc(layout.total_bytes)
    upload_weights(drv, layout, base, "stream", staging_bytes=7)  # chunks cut through every tensor
    for name, dtype, shape, raw in WEIGHTS:
        assert fake.read(base + layout.slots[name].offset, len(raw)) == raw
    assert not fake.host  # staging freed
    assert fake.calls.count("cuMemcpyHtoDAsync") >= (256 + 6 + 16) // 7


def test_kv_blocks_from_memory_and_cap():
    spec = KvSpec(num_layers=2, block_size=16, num_kv_heads=2, head_dim=64, dtype="bfloat16")
    assert spec.bytes_per_block == 2 * 2 * 16 * 2 * 64 * 2
    free = 1000 * spec.bytes_per_block + 100
    blocks, why = kv_blocks_for_memory(free, 0.5, 0, spec, cap=10_000)
    assert (blocks, why) == (500, "gpu memory")
    assert kv_blocks_for_memory(free, 0.5, 0, spec, cap=64) == (64, "max_batch_size x max_seq_len")
    assert kv_blocks_for_memory(free, 0.9, free, spec, cap=64)[0] == 0
    assert spec.pointer(1 << 20, 10, 1, "v") == (1 << 20) + 3 * spec.pool_bytes(10)


# ---- the backend end to end against the fake --------------------------------------------------


def test_open_loads_each_module_once_captures_one_graph_per_decode_plan_and_sizes_kv(bundle):
    fake = fake_driver()
    backend = CudaBackend.open(bundle, driver_module=fake)
    try:
        assert sorted(fake.modules_loaded) == sorted(BINARIES.values())
        assert fake.graphs_instantiated == 2 == backend.load_summary["num_graphs"]
        assert fake.calls.count("cuStreamBeginCapture") == 2
        assert backend.plans["prefill_t8"].graph is None
        assert [a for a in fake.func_attrs_set] == [("kv_write_kernel", 8, 232448)]  # > 48 KiB only
        assert backend.num_kv_blocks == 2 * 4  # largest decode batch x max_blocks_per_seq
        s = backend.load_summary
        assert s["kv_tokens"] == 8 * BLOCK and s["kv_limited_by"] == "max_batch_size x max_seq_len"
        assert s["weights_bytes"] == 278 and s["arena_bytes"] == 1024 and s["num_modules"] == 3
        assert fake.read(backend.weights + 512, 16) == WEIGHTS[2][3]
        assert fake.read(backend.kv_base, backend.kv.total_bytes(8)) == bytes(backend.kv.total_bytes(8))  # zeroed
    finally:
        backend.close()
    assert not fake.mem and not fake.host and fake.live_graph_execs == 0
    assert fake.calls.count("cuModuleUnload") == 3
    backend.close()  # idempotent


def test_decode_is_one_copy_in_one_graph_launch_one_copy_out(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake, num_kv_blocks=5) as backend:
        assert backend.num_kv_blocks == 5 and backend.load_summary["kv_limited_by"] == "requested"
        plan = bundle.plan("decode_b2")
        fake.calls.clear()
        fake.launches.clear()
        tokens, logits = backend.run(plan, step_inputs(plan, [3, 9], [5, 17]), want_logits=False)
        assert fake.calls == ["cuMemcpyHtoDAsync", "cuGraphLaunch", "cuMemcpyDtoHAsync", "cuStreamSynchronize"]
        assert tokens.dtype == np.int32 and tokens.tolist() == [4, 10] and logits is None
        # the graph replayed the captured launches with the pointers of this plan
        names = [name for name, *_ in fake.launches]
        assert names == ["embed_kernel", "kv_write_kernel", "sample_kernel"]
        _, grid, block, shared, values = fake.launches[1]
        assert grid == (2, 1, 1) and block == (128, 1, 1) and shared == 65536
        k_pool = backend.kv.pointer(backend.kv_base, 5, 0, "k")
        v_pool = backend.kv.pointer(backend.kv_base, 5, 0, "v")
        assert values[0] == backend.arena + 0 and values[1:3] == [k_pool, v_pool] and values[4] == 2
        assert v_pool - k_pool == 5 * BLOCK * H * 4 + (-(5 * BLOCK * H * 4) % 256)
        assert fake.read(k_pool + 16 * 17, 16) == TABLE[9].tobytes()  # KV written at slot 17

        tokens, logits = backend.run(plan, step_inputs(plan, [0, 15], [1, -1]), want_logits=True)
        assert tokens.tolist() == [1, 0]
        assert logits.dtype == np.float32 and logits.shape == (2, V)
        assert logits.argmax(axis=1).tolist() == [1, 0]
        assert fake.calls[-3:] == ["cuMemcpyDtoHAsync", "cuMemcpyDtoHAsync", "cuStreamSynchronize"]


def test_prefill_runs_eagerly_and_reads_logits_indices(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("prefill_t8")
        fake.calls.clear()
        fake.launches.clear()
        inputs = step_inputs(plan, [1, 2, 3, 4, 5, 6], list(range(6)), logits_indices=[2, 5])
        tokens, _ = backend.run(plan, inputs, want_logits=False)
        assert tokens.tolist() == [4, 7]
        assert fake.calls.count("cuLaunchKernel") == 3 and "cuGraphLaunch" not in fake.calls
        # the prefill plan's own input block: the sample kernel read logits_indices from it
        sample = fake.launches[2][4]
        assert sample[1] == backend.plans["prefill_t8"].dev_inputs + _offset(plan, "logits_indices")
        assert sample[7] % 128 == 0  # aligned global scratch


def _offset(plan, key):
    from llmc.runtime.backends.cuda_memory import input_offsets

    return input_offsets(plan)[0][key]


def test_run_refuses_bad_inputs_before_touching_the_gpu(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("decode_b2")
        fake.calls.clear()
        with pytest.raises(ValueError, match="input_ids holds values outside"):
            backend.run(plan, step_inputs(plan, [3, V], [0, 1]), want_logits=False)
        with pytest.raises(ValueError, match="input_ids holds values outside"):
            backend.run(plan, step_inputs(plan, [3, -1], [0, 1]), want_logits=False)
        with pytest.raises(ValueError, match=r"slot_mapping holds values outside \[-1, 32\)"):
            backend.run(plan, step_inputs(plan, [3, 4], [0, 8 * BLOCK]), want_logits=False)
        with pytest.raises(ValueError, match="slot_mapping holds values outside"):
            backend.run(plan, step_inputs(plan, [3, 4], [0, -2]), want_logits=False)
        backend.run(plan, step_inputs(plan, [3, 4], [8 * BLOCK - 1, -1]), want_logits=False)  # the edges are fine
        bad = step_inputs(plan, [1, 2], [0, 1])
        bad["block_tables"] = np.zeros((2, 5), dtype=np.int32)
        with pytest.raises(ValueError, match="has shape"):
            backend.run(plan, bad, want_logits=False)
        del bad["block_tables"]
        with pytest.raises(ValueError, match="'block_tables' is missing"):
            backend.run(plan, bad, want_logits=False)
        assert fake.calls.count("cuGraphLaunch") == 1  # only the last, valid step ran


def test_run_from_another_thread_makes_the_context_current(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("decode_b1")
        result = {}
        t = threading.Thread(target=lambda: result.update(out=backend.run(plan, step_inputs(plan, [7], [0]), False)))
        t.start()
        t.join()
        assert result["out"][0].tolist() == [8]
        assert len(set(fake.ctx_set_threads)) == 2


def test_errors_name_the_function_the_error_and_the_plan(bundle):
    fake = fake_driver()
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        plan = bundle.plan("prefill_t8")
        fake.fail["cuLaunchKernel"] = CUresult.CUDA_ERROR_INVALID_VALUE
        with pytest.raises(CudaError, match=r"cuLaunchKernel: CUDA_ERROR_INVALID_VALUE \(fake description\) at "
                                            r"prefill_t8 step 0 \(embed\) kernel embed_kernel while running plan prefill_t8"):
            backend.run(plan, step_inputs(plan, [1], [0]), want_logits=False)
        del fake.fail["cuLaunchKernel"]
        fake.fail["cuStreamSynchronize"] = CUresult.CUDA_ERROR_ILLEGAL_ADDRESS
        with pytest.raises(CudaError, match="cuStreamSynchronize: CUDA_ERROR_ILLEGAL_ADDRESS.*decode_b1"):
            backend.run(bundle.plan("decode_b1"), step_inputs(bundle.plan("decode_b1"), [1], [0]), want_logits=False)
        del fake.fail["cuStreamSynchronize"]


def test_a_failed_load_frees_everything(bundle):
    fake = fake_driver()
    fake.fail["cuGraphInstantiate"] = CUresult.CUDA_ERROR_OUT_OF_MEMORY
    with pytest.raises(CudaError, match="cuGraphInstantiate: CUDA_ERROR_OUT_OF_MEMORY"):
        CudaBackend.open(bundle, driver_module=fake)
    assert not fake.mem and not fake.host


def test_a_cubin_for_another_gpu_says_rebuild(bundle):
    fake = fake_driver()
    fake.fail["cuModuleLoadData"] = CUresult.CUDA_ERROR_NO_BINARY_FOR_GPU
    with pytest.raises(BundleError, match="does not load on sm90 .*update the NVIDIA driver"):
        CudaBackend.open(bundle, driver_module=fake)


def test_compat_is_checked_before_anything_is_loaded(bundle):
    fake = fake_driver(cc=(8, 0), name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(BundleError, match=r"^built for sm90; this GPU is sm80 \(NVIDIA A100-SXM4-80GB\): "
                                          r"rebuild with --target sm80$"):
        CudaBackend.open(bundle, driver_module=fake)
    assert "cuMemAlloc" not in fake.calls and "cuDevicePrimaryCtxRetain" not in fake.calls
    nodev = fake_driver(init_error=CUresult.CUDA_ERROR_NO_DEVICE)
    with pytest.raises(BundleError, match=r"^no NVIDIA driver was found \(cuInit: CUDA_ERROR_NO_DEVICE\); "):
        CudaBackend.open(bundle, driver_module=nodev)


def test_copy_bandwidth_counts_bytes_read_and_written(bundle):
    fake = fake_driver(total=4 << 30)
    with CudaBackend.open(bundle, driver_module=fake) as backend:
        bw = backend.measure_copy_bandwidth(nbytes=256 << 20)
        assert bw == pytest.approx(2 * (256 << 20) * 10 / 2e-3)  # the fake's events say 2 ms


def test_the_cuda_path_imports_no_torch_triton_or_transformers():
    code = ("import sys, llmc.runtime, llmc.runtime.backends.cuda, llmc.runtime.compat, llmc.runtime.bench\n"
            "bad = [m for m in ('torch', 'triton', 'transformers') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- against cuda-python's real bindings, over a stand-in libcuda.so.1 ---------------------------
# The fakes above stand in for the Python module; this stands in for the driver library under it,
# so every argument crosses cuda-python's real marshalling (types, return tuples, enums).

FAKE_LIBCUDA = r'''/* A stand-in libcuda.so.1 for exercising cuda-python's real bindings without a GPU:
   device memory is host memory, kernels are recorded (their first pointer parameter is checked
   to be readable), graphs replay the launch count. Every call is logged to $FAKE_CUDA_LOG. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef uint64_t CUdeviceptr;
#define OK 0
static FILE *logf_;
static size_t used_;
static const size_t TOTAL = (size_t)80 << 30;
static int capturing_, captured_, launched_;

static int fails(const char *name) { const char *f = getenv("FAKE_CUDA_FAIL"); return f && !strcmp(f, name); }
static void logc(const char *fmt, ...) {
  if (!logf_) { const char *p = getenv("FAKE_CUDA_LOG"); logf_ = fopen(p ? p : "/dev/null", "a"); }
  va_list ap; va_start(ap, fmt); vfprintf(logf_, fmt, ap); va_end(ap); fputc('\n', logf_); fflush(logf_);
}

CUresult cuInit(unsigned f) { logc("cuInit %u", f); return OK; }
CUresult cuDriverGetVersion(int *v) { *v = 13000; return OK; }
CUresult cuDeviceGetCount(int *n) { *n = 1; return OK; }
CUresult cuDeviceGet(int *d, int o) { *d = o; logc("cuDeviceGet %d", o); return OK; }
CUresult cuDeviceGetName(char *s, int len, int d) { snprintf(s, len, "Fake NVIDIA H100"); logc("cuDeviceGetName %d %d", len, d); return OK; }
CUresult cuDeviceGetAttribute(int *v, int a, int d) {
  *v = a == 75 ? 9 : a == 76 ? 0 : a == 97 ? 232448 : 0; logc("cuDeviceGetAttribute %d %d", a, d); return OK; }
CUresult cuDeviceTotalMem(size_t *b, int d) { *b = TOTAL; return OK; }
CUresult cuDevicePrimaryCtxRetain(void **c, int d) { *c = (void *)0xC7; logc("cuDevicePrimaryCtxRetain %d", d); return OK; }
CUresult cuDevicePrimaryCtxRelease(int d) { logc("cuDevicePrimaryCtxRelease %d", d); return OK; }
CUresult cuCtxSetCurrent(void *c) { logc("cuCtxSetCurrent %p", c); return c == (void *)0xC7 ? OK : 201; }
CUresult cuMemGetInfo(size_t *f, size_t *t) { *t = TOTAL; *f = TOTAL - used_; return OK; }
CUresult cuMemAlloc(CUdeviceptr *p, size_t n) {
  void *m = NULL; if (posix_memalign(&m, 256, n ? n : 1)) return 2;
  used_ += n; *p = (CUdeviceptr)(uintptr_t)m; logc("cuMemAlloc %zu -> %p", n, m); return OK; }
CUresult cuMemFree(CUdeviceptr p) { logc("cuMemFree %p", (void *)(uintptr_t)p); free((void *)(uintptr_t)p); return OK; }
CUresult cuMemHostAlloc(void **p, size_t n, unsigned f) { *p = malloc(n); logc("cuMemHostAlloc %zu %u -> %p", n, f, *p); return OK; }
CUresult cuMemFreeHost(void *p) { logc("cuMemFreeHost %p", p); free(p); return OK; }
#define BIG ((size_t)64 << 20) /* larger copies are only timed (bandwidth), not done */
CUresult cuMemsetD8Async(CUdeviceptr d, unsigned char v, size_t n, void *s) {
  if (n <= BIG) { memset((void *)(uintptr_t)d, v, n); }
  logc("cuMemsetD8Async %p %u %zu", (void *)(uintptr_t)d, v, n); return OK; }
CUresult cuMemcpyHtoDAsync(CUdeviceptr d, const void *s, size_t n, void *st) {
  memcpy((void *)(uintptr_t)d, s, n); logc("cuMemcpyHtoDAsync %p %p %zu", (void *)(uintptr_t)d, s, n); return OK; }
CUresult cuMemcpyDtoHAsync(void *d, CUdeviceptr s, size_t n, void *st) {
  memcpy(d, (void *)(uintptr_t)s, n); logc("cuMemcpyDtoHAsync %p %p %zu", d, (void *)(uintptr_t)s, n); return OK; }
CUresult cuMemcpyDtoDAsync(CUdeviceptr d, CUdeviceptr s, size_t n, void *st) {
  if (n <= BIG) { memcpy((void *)(uintptr_t)d, (void *)(uintptr_t)s, n); }
  logc("cuMemcpyDtoDAsync %zu", n); return OK; }
CUresult cuStreamCreate(void **s, unsigned f) { *s = (void *)0x57; logc("cuStreamCreate %u", f); return OK; }
CUresult cuStreamDestroy(void *s) { logc("cuStreamDestroy %p", s); return OK; }
CUresult cuStreamSynchronize(void *s) { logc("cuStreamSynchronize %p", s); return s == (void *)0x57 ? OK : 400; }
CUresult cuEventCreate(void **e, unsigned f) { *e = malloc(1); logc("cuEventCreate %u", f); return OK; }
CUresult cuEventRecord(void *e, void *s) { logc("cuEventRecord"); return OK; }
CUresult cuEventSynchronize(void *e) { return OK; }
CUresult cuEventDestroy(void *e) { free(e); return OK; }
CUresult cuEventElapsedTime(float *ms, void *a, void *b) { *ms = 2.0f; logc("cuEventElapsedTime"); return OK; }
CUresult cuModuleLoadData(void **m, const void *image) {
  if (fails("cuModuleLoadData")) return 209;
  *m = strdup((const char *)image); logc("cuModuleLoadData %.40s", (const char *)image); return OK; }
CUresult cuModuleUnload(void *m) { logc("cuModuleUnload"); free(m); return OK; }
CUresult cuModuleGetFunction(void **f, void *m, const char *name) { *f = strdup(name); logc("cuModuleGetFunction %s", name); return OK; }
CUresult cuFuncGetAttribute(int *v, int a, void *f) { *v = a == 0 ? 1024 : 0; logc("cuFuncGetAttribute %d %s", a, (char *)f); return OK; }
CUresult cuFuncSetAttribute(void *f, int a, int v) { logc("cuFuncSetAttribute %s %d %d", (char *)f, a, v); return OK; }
CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shm, void *s, void **params, void **extra) {
  if (!params || extra || fails("cuLaunchKernel")) return 1;
  uint64_t first; memcpy(&first, params[0], 8);  /* the driver copies every parameter now */
  if (capturing_) captured_++; else launched_++;
  logc("cuLaunchKernel %s grid %u %u %u block %u %u %u shared %u p0 %llx", (char *)f, gx, gy, gz, bx, by, bz, shm,
       (unsigned long long)first);
  return OK; }
CUresult cuStreamBeginCapture(void *s, int mode) { capturing_ = 1; captured_ = 0; logc("cuStreamBeginCapture %d", mode); return OK; }
CUresult cuStreamEndCapture(void *s, void **g) { capturing_ = 0; int *n = malloc(sizeof(int)); *n = captured_; *g = n; logc("cuStreamEndCapture %d", captured_); return OK; }
CUresult cuGraphInstantiateWithFlags(void **e, void *g, unsigned long long fl) {
  int *n = malloc(sizeof(int)); *n = *(int *)g; *e = n; logc("cuGraphInstantiate %d nodes", *n); return OK; }
CUresult cuGraphUpload(void *e, void *s) { return OK; }
CUresult cuGraphLaunch(void *e, void *s) { launched_ += *(int *)e; logc("cuGraphLaunch %d", *(int *)e); return OK; }
CUresult cuGraphExecDestroy(void *e) { free(e); logc("cuGraphExecDestroy"); return OK; }
CUresult cuGraphDestroy(void *g) { free(g); return OK; }
CUresult cuGetErrorName(CUresult e, const char **s) { *s = e ? "CUDA_ERROR_FAKE" : "CUDA_SUCCESS"; return OK; }
CUresult cuGetErrorString(CUresult e, const char **s) { *s = "fake"; return OK; }

#define F(name) {#name, (void *)name}
static struct { const char *name; void *fn; } table[] = {
  F(cuInit), F(cuDriverGetVersion), F(cuDeviceGetCount), F(cuDeviceGet), F(cuDeviceGetName), F(cuDeviceGetAttribute),
  F(cuDeviceTotalMem), F(cuDevicePrimaryCtxRetain), F(cuDevicePrimaryCtxRelease), F(cuCtxSetCurrent), F(cuMemGetInfo),
  F(cuMemAlloc), F(cuMemFree), F(cuMemHostAlloc), F(cuMemFreeHost), F(cuMemsetD8Async), F(cuMemcpyHtoDAsync),
  F(cuMemcpyDtoHAsync), F(cuMemcpyDtoDAsync), F(cuStreamCreate), F(cuStreamDestroy), F(cuStreamSynchronize),
  F(cuEventCreate), F(cuEventRecord), F(cuEventSynchronize), F(cuEventDestroy), F(cuEventElapsedTime),
  F(cuModuleLoadData), F(cuModuleUnload), F(cuModuleGetFunction), F(cuFuncGetAttribute), F(cuFuncSetAttribute),
  F(cuLaunchKernel), F(cuStreamBeginCapture), F(cuStreamEndCapture), F(cuGraphInstantiateWithFlags),
  {"cuGraphInstantiate", (void *)cuGraphInstantiateWithFlags}, F(cuGraphUpload), F(cuGraphLaunch),
  F(cuGraphExecDestroy), F(cuGraphDestroy), F(cuGetErrorName), F(cuGetErrorString),
};

CUresult cuGetProcAddress_v2(const char *sym, void **pfn, int ver, uint64_t flags, int *status) {
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (!strcmp(table[i].name, sym)) { *pfn = table[i].fn; if (status) *status = 0; return OK; }
  *pfn = NULL; if (status) *status = 1; return 500;
}
CUresult cuGetProcAddress(const char *sym, void **pfn, int ver, uint64_t flags) { return cuGetProcAddress_v2(sym, pfn, ver, flags, NULL); }
'''

CHILD = """
import json, sys
import numpy as np
from llmc.artifacts import Bundle
from llmc.runtime.backends.cuda import CudaBackend
bundle = Bundle.open(sys.argv[1])
zeros = lambda plan: {k: np.zeros(v["shape"], v["dtype"]) for k, v in plan["inputs"].items()}
with CudaBackend.open(bundle) as backend:
    tokens, logits = backend.run(bundle.plan("decode_b2"), zeros(bundle.plan("decode_b2")), True)
    assert tokens.shape == (2,) and tokens.dtype == np.int32 and logits.shape == (2, 16), (tokens, logits)
    backend.run(bundle.plan("prefill_t8"), zeros(bundle.plan("prefill_t8")), False)
    print(json.dumps({"summary": backend.load_summary, "bandwidth": backend.measure_copy_bandwidth()}))
"""


@pytest.fixture(scope="module")
def fake_libcuda(tmp_path_factory):
    import shutil

    pytest.importorskip("cuda.bindings.driver")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the stand-in libcuda.so.1")
    d = tmp_path_factory.mktemp("fakecuda")
    (d / "fakecuda.c").write_text(FAKE_LIBCUDA)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(d / "libcuda.so.1"), str(d / "fakecuda.c")], check=True)
    return d


def run_over_fake_libcuda(libdir, bundle_dir, fail=None):
    import os

    log = libdir / f"log-{fail}"
    log.unlink(missing_ok=True)
    env = {**os.environ, "LD_LIBRARY_PATH": str(libdir), "FAKE_CUDA_LOG": str(log), "FAKE_CUDA_FAIL": fail or ""}
    done = subprocess.run([sys.executable, "-c", CHILD, str(bundle_dir)], env=env, capture_output=True, text=True,
                          timeout=300)
    return done, (log.read_text().splitlines() if log.exists() else [])


def test_the_real_bindings_accept_every_call(fake_libcuda, tmp_path):
    write_fake_bundle(tmp_path / "b.llmc")
    done, log = run_over_fake_libcuda(fake_libcuda, tmp_path / "b.llmc")
    assert done.returncode == 0, done.stdout + done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["summary"]["device"] == "Fake NVIDIA H100" and out["summary"]["num_graphs"] == 2
    assert out["bandwidth"] == pytest.approx(2 * (1 << 30) * 10 / 2e-3)
    assert [line for line in log if line.startswith("cuGraphInstantiate")] == ["cuGraphInstantiate 3 nodes"] * 2
    assert "cuFuncSetAttribute kv_write_kernel 8 232448" in log
    assert any(line.startswith("cuLaunchKernel sample_kernel grid 2 1 1 block 128 1 1 shared 1024") for line in log)
    assert log.count("cuGraphLaunch 3") == 1  # the decode step after the warm-ups
    count = lambda prefix: sum(line.startswith(prefix) for line in log)
    assert count("cuMemAlloc ") == count("cuMemFree ") and count("cuMemHostAlloc ") == count("cuMemFreeHost ")
    assert count("cuModuleLoadData") == count("cuModuleUnload") == 3
    assert log[-1] == "cuDevicePrimaryCtxRelease 0"


@pytest.mark.parametrize("fail, message", [
    ("cuModuleLoadData", "does not load on sm90 (Fake NVIDIA H100): cuModuleLoadData: CUDA_ERROR_NO_BINARY_FOR_GPU"),
    ("cuLaunchKernel", "cuLaunchKernel: CUDA_ERROR_INVALID_VALUE (fake) at decode_b1 step 0 (embed) kernel embed_kernel "
                       "while warming up plan decode_b1"),
])
def test_driver_errors_through_the_real_bindings(fake_libcuda, tmp_path, fail, message):
    write_fake_bundle(tmp_path / "b.llmc")
    done, _ = run_over_fake_libcuda(fake_libcuda, tmp_path / "b.llmc", fail)
    assert done.returncode != 0 and message in done.stderr, done.stderr


def test_check_device_needs_only_the_manifest(bundle):
    from llmc.runtime.backends.cuda import check_device

    _, device = check_device(bundle.manifest, driver_module=fake_driver())
    assert device.target_name == "sm90" and device.name == "NVIDIA H100 80GB HBM3"
    with pytest.raises(BundleError, match="^built for sm90; this GPU is sm89 .*rebuild with --target sm89$"):
        check_device(bundle.manifest, driver_module=fake_driver(cc=(8, 9), name="NVIDIA L40S"))
