"""A fake of cuda-python's driver module and a tiny bundle its fake kernels compute on.

The fake keeps device memory in bytearrays, decodes every cuLaunchKernel's parameters by the
kernel's ABI (as the driver copies them), runs a Python stand-in for each kernel, and records
stream capture. Shared by the cuda backend tests in this folder.
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from llmc.artifacts import Bundle, BundleWriter, sha256_bytes

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

