"""Kernel launches for the cuda backend: parameters packed once at load, eager runs, graphs.

Each launch of a plan becomes a `PreparedLaunch`: its function handle, grid, block, dynamic
shared memory, and a `ParamBlock`, a ctypes array of `void*` pointing at 8-byte slots that
already hold every parameter value (pointers resolved from the arena, inputs, weights and KV
pool; scalars packed by their ABI type; the two trailing Triton scratch pointers appended).
`cuLaunchKernel` gets the array's address, so a step does no Python packing at all.
"""

from __future__ import annotations

import ctypes
import math
import struct
from dataclasses import dataclass
from typing import Callable

from llmc.errors import BundleError

from .driver import DriverError

SMEM_DEFAULT = 48 << 10  # dynamic shared memory a kernel gets without opting in
POINTER_FORMS = ("buffer", "input", "weight", "kv_cache", "null")
# Triton scalar type -> struct format (little endian, as the GPU reads it)
SCALAR_FORMATS = {
    "i1": "<b", "i8": "<b", "i16": "<h", "i32": "<i", "i64": "<q",
    "u1": "<B", "u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q",
    "fp16": "<e", "fp32": "<f", "f32": "<f", "fp64": "<d", "bf16": "bf16",
}
FLOAT_TYPES = ("fp16", "bf16", "fp32", "f32", "fp64")


def pack_scalar(value, abi_type: str, where: str) -> bytes:
    """The bytes of one scalar parameter of Triton type `abi_type`."""
    fmt = SCALAR_FORMATS.get(abi_type)
    if fmt is None:
        raise BundleError(f"{where}: kernel parameter type {abi_type!r} is not supported by the cuda runtime; "
                          "rebuild the bundle with this llmc version")
    is_float = abi_type in FLOAT_TYPES
    if not is_float and (isinstance(value, float) and not value.is_integer()):
        raise BundleError(f"{where}: {value!r} passed to an integer parameter ({abi_type}); rebuild the bundle")
    if fmt == "bf16":  # round to nearest even from float32 bits
        bits = struct.unpack("<I", struct.pack("<f", float(value)))[0]
        bits += 0x7FFF + ((bits >> 16) & 1)
        return struct.pack("<H", (bits >> 16) & 0xFFFF)
    try:
        return struct.pack(fmt, float(value) if is_float else int(value))
    except struct.error:
        raise BundleError(f"{where}: {value!r} does not fit a {abi_type} parameter; rebuild the bundle") from None


class ParamBlock:
    """`kernelParams` for cuLaunchKernel: N pointers to N 8-byte-aligned slots holding the values."""

    SLOT = 8

    def __init__(self, values: list[bytes]):
        n = max(len(values), 1)
        self.count = len(values)
        self.storage = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(self.storage)
        for i, raw in enumerate(values):
            if len(raw) > self.SLOT:
                raise ValueError(f"parameter {i} is {len(raw)} bytes; slots hold {self.SLOT}")
            ctypes.memmove(base + i * self.SLOT, raw, len(raw))
        self.pointers = (ctypes.c_void_p * n)(*[base + i * self.SLOT for i in range(len(values))])
        self.address = ctypes.addressof(self.pointers)

    def raw(self, i: int, size: int = SLOT) -> bytes:
        """The bytes the pointer of parameter `i` points at (what the driver copies)."""
        return ctypes.string_at(self.pointers[i], size)


@dataclass(frozen=True)
class PreparedLaunch:
    label: str  # "decode_b8 step 3 (layers_0_attn) kernel paged_attention_kernel"
    func: object
    grid: tuple[int, int, int]
    block_x: int
    shared: int
    params: ParamBlock


def grid3(grid: list[int]) -> tuple[int, int, int]:
    g = tuple(int(x) for x in grid) + (1,) * (3 - len(grid))
    return g  # type: ignore[return-value]


def scratch_bytes(entry: dict, grid: list[int], kind: str) -> int:
    """Triton's launcher: size * (gridX * gridY * gridZ) * num_ctas bytes, 0 when the size is 0."""
    size = entry[f"{kind}_scratch_size"]
    return size * math.prod(grid3(grid)) * entry.get("num_ctas", 1) if size else 0


def prepare_launch(
    launch: dict,
    entry: dict,
    func,
    resolve: Callable[[dict, str], int],
    scratch: dict[str, int],
    where: str,
    warp_size: int = 32,
) -> PreparedLaunch:
    """Pack one launch of a plan. `resolve(ref, where)` gives a pointer-form reference's device
    address; `scratch` the global/profile scratch buffers (used only when the kernel's size > 0)."""
    abi, params = entry["params"], launch["params"]
    label = f"{where} kernel {entry['name']}"
    if entry.get("num_ctas", 1) != 1:
        raise BundleError(f"{label}: num_ctas={entry['num_ctas']} (thread block clusters) is not supported by the cuda "
                          "runtime; rebuild with num_ctas=1")
    extra = len(abi) - len(params)  # the trailing scratch pointers Triton appends: 2 (global, profile) since 3.4
    if not 0 <= extra <= 2 or any(not p["type"].startswith("*") for p in abi[len(params):]):
        raise BundleError(f"{label}: the launch passes {len(params)} parameters; the kernel's ABI has {len(abi)} "
                          "(including 2 scratch pointers): rebuild the bundle")
    tail = [{"scratch": "global"}, {"scratch": "profile"}][:extra]
    values = []
    for i, (ref, spec) in enumerate(zip(params + tail, abi)):
        here, kind = f"{label} parameter {i} ({spec['name']})", spec["type"]
        if kind.startswith("*"):
            if "scratch" in ref:
                size = scratch_bytes(entry, launch["grid"], ref["scratch"])
                ptr = scratch[ref["scratch"]] if size else 0
            elif not any(form in ref for form in POINTER_FORMS):
                raise BundleError(f"{here}: the kernel takes a pointer ({kind}), the plan passes {ref}; rebuild the bundle")
            else:
                ptr = 0 if "null" in ref else resolve(ref, here)
            values.append(struct.pack("<Q", ptr))
        else:
            if "scalar" not in ref:
                raise BundleError(f"{here}: the kernel takes a {kind} scalar, the plan passes {ref}; rebuild the bundle")
            declared = ref.get("type")
            if declared and (declared in FLOAT_TYPES) != (kind in FLOAT_TYPES):
                raise BundleError(f"{here}: the plan's {declared} scalar does not match the kernel's {kind}; "
                                  "rebuild the bundle")
            values.append(pack_scalar(ref["scalar"], kind, here))
    grid = grid3(launch["grid"])
    return PreparedLaunch(label, func, grid, warp_size * entry["num_warps"], entry["shared"], ParamBlock(values))


def run_eager(drv, stream, launches: list[PreparedLaunch], sync_each: bool = False) -> None:
    """Launch in order on `stream`; a failure names the launch (and, with sync_each, the faulting one)."""
    for launch in launches:
        try:
            if hasattr(launch, "issue"):  # a collective (nccl.PreparedCollective)
                launch.issue(stream)
            else:
                drv.launch(launch.func, launch.grid, launch.block_x, launch.shared, stream, launch.params.address)
            if sync_each:
                drv.sync(stream)
        except DriverError as e:
            raise type(e)(f"{e} at {launch.label}", e.func, e.error) from None


def capture_graph(drv, stream, launches: list[PreparedLaunch], label: str):
    """Stream-capture `launches` into one CUDA graph and instantiate it; returns the CUgraphExec."""
    drv.begin_capture(stream)
    try:
        run_eager(drv, stream, launches)
    except BaseException:
        try:  # leave the stream usable
            drv.graph_destroy(drv.end_capture(stream))
        except Exception:
            pass
        raise
    graph = drv.end_capture(stream)
    try:
        graph_exec = drv.instantiate(graph)
    except DriverError as e:
        raise type(e)(f"{e} instantiating the graph of {label}", e.func, e.error) from None
    finally:
        drv.graph_destroy(graph)
    drv.graph_upload(graph_exec, stream)
    return graph_exec


def load_kernels(drv, bundle, plans: dict[str, dict], dev, device,
                 warp_size: int = 32) -> tuple[dict[str, tuple[dict, object]], list]:
    """Load every module the plans use, once; returns (kernel id -> (index entry, CUfunction), modules)."""
    index = bundle.kernel_index()["kernels"]
    used = dict.fromkeys(l["kernel"] for p in plans.values() for s in p["steps"] for l in s.get("launches", []))
    optin = drv.device_attribute("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", dev)
    modules, kernels = {}, {}
    try:
        for kid in used:
            entry = index[kid]
            if entry["file"] not in modules:
                try:
                    modules[entry["file"]] = drv.load_module(bundle.file(entry["file"]).read_bytes())
                except DriverError as e:
                    if not any(code in str(e) for code in drv.bad_image_codes):
                        raise
                    if entry.get("target") == device.target_name:  # the arch matches: the driver is too old
                        advice = (f"update the {drv.vendor} driver (it may be older than the compiler that built the "
                                  "bundle), or rebuild the bundle with the Triton installed here")
                    else:
                        advice = f"rebuild with --target {device.target_name}"
                    raise BundleError(f"{entry['file']} ({entry['name']}, built for {entry.get('target')}) does not "
                                      f"load on {device.describe()}: {e}; {advice}") from None
            func = drv.get_function(modules[entry["file"]], entry["name"])
            _configure(drv, func, entry, optin, device, warp_size)
            kernels[kid] = (entry, func)
    except BaseException:
        for module in modules.values():
            try:
                drv.module_unload(module)
            except Exception:
                pass
        raise
    return kernels, list(modules.values())


def _configure(drv, func, entry: dict, optin: int, device, warp_size: int) -> None:
    """Check the block size, and opt in to more than 48 KiB of dynamic shared memory (as Triton's loader does)."""
    what = f"kernel {entry['name']} ({entry['file']})"
    threads = drv.func_attribute("MAX_THREADS_PER_BLOCK", func)
    if warp_size * entry["num_warps"] > threads:
        raise BundleError(f"{what} launches {warp_size * entry['num_warps']} threads per block; it allows {threads} "
                          "on this GPU: rebuild the bundle")
    if entry["shared"] > SMEM_DEFAULT:
        static = drv.func_attribute("SHARED_SIZE_BYTES", func)
        if entry["shared"] > optin - static:
            raise BundleError(f"{what} needs {entry['shared']} bytes of shared memory; {device.name} allows "
                              f"{optin - static}: rebuild with the right --target")
        drv.func_set_max_dynamic_shared(func, optin - static)
