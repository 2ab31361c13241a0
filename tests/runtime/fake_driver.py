"""A fake of cuda-python's driver module: device memory in bytearrays, every cuLaunchKernel's
parameters decoded by the kernel's ABI (as the driver copies them) and run by a Python stand-in,
stream capture recorded. Shared by the cuda backend tests in this folder.
"""

from __future__ import annotations

import ctypes
import enum
import struct
import threading
from types import SimpleNamespace


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
        self.htod: list[int] = []  # bytes of each host-to-device copy
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
        self.htod.append(n)
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
