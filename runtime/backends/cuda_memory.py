"""Device memory for the cuda backend: weights (one allocation, streamed through pinned
staging), the KV pool (sized from free memory), and the bookkeeping that frees it all.

Weights never pass through numpy dtypes (numpy has no bfloat16): each tensor's raw bytes go
from the safetensors file to its 256-aligned slot in one device allocation.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.artifacts.manifest import DTYPES
from llmc.artifacts.safetensors_check import DTYPES as ST_DTYPES
from llmc.errors import BundleError
from llmc.runtime.sparse_inputs import NEUTRAL

ALIGN = 256
STAGING_BYTES = 64 << 20  # per pinned staging buffer; two of them alternate


def align(n: int, a: int = ALIGN) -> int:
    return -(-int(n) // a) * a


@dataclass(frozen=True)
class WeightSlot:
    name: str
    file: Path
    begin: int  # absolute byte range of the tensor's data in `file`
    end: int
    offset: int  # byte offset in the device allocation (256-aligned)
    dtype: str  # safetensors dtype (BF16, F32, ...)
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class WeightLayout:
    slots: dict[str, WeightSlot]
    total_bytes: int  # the device allocation, alignment padding included

    @property
    def data_bytes(self) -> int:
        """Bytes of tensor data: what one pass over the weights reads."""
        return sum(s.nbytes for s in self.slots.values())


def read_safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    """name -> (dtype, shape, begin, end), with absolute file offsets; checked against the file size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise BundleError(f"{path.name}: too short for a safetensors file; rebuild the bundle")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000 or 8 + n > size:
            raise BundleError(f"{path.name}: safetensors header length {n} does not fit the file; rebuild the bundle")
        header = json.loads(f.read(n))
    start, result = 8 + n, {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (lo, hi) = spec["dtype"], tuple(spec["shape"]), spec["data_offsets"]
        want = math.prod(shape) * ST_DTYPES.get(dtype, 0)
        if dtype not in ST_DTYPES or hi - lo != want or not 0 <= lo <= hi <= size - start:
            raise BundleError(f"{path.name}: tensor {name!r} ({dtype} {list(shape)}) has data_offsets [{lo}, {hi}] "
                              "that do not match its shape or the file; rebuild the bundle")
        result[name] = (dtype, shape, start + lo, start + hi)
    return result


def layout_weights(files: list[Path]) -> WeightLayout:
    """Place every tensor of `files` at a 256-aligned offset of one device allocation."""
    slots: dict[str, WeightSlot] = {}
    offset = 0
    for path in files:
        header = read_safetensors_header(path)
        for name, (dtype, shape, begin, end) in sorted(header.items(), key=lambda kv: kv[1][2]):
            if name in slots:
                raise BundleError(f"{path.name}: tensor {name!r} is also in {slots[name].file.name}; rebuild the bundle")
            slots[name] = WeightSlot(name, path, begin, end, offset, dtype, shape)
            offset = align(offset + (end - begin))
    return WeightLayout(slots, offset)


def upload_weights(drv, layout: WeightLayout, base: int, stream, staging_bytes: int = STAGING_BYTES) -> None:
    """Stream each file through two alternating pinned buffers; one async copy per (chunk, tensor) piece.

    The file is read sequentially in chunks; the pieces of the tensors inside a chunk are copied
    to their slots while the next chunk is read into the other buffer.
    """
    from .driver import host_array

    if not layout.slots:
        return
    staging_bytes = min(staging_bytes, align(max(s.end for s in layout.slots.values())))  # small bundles
    buffers = [drv.alloc_host(staging_bytes) for _ in range(2)]
    events = [drv.event_create(timing=False) for _ in range(2)]
    used = [False, False]
    try:
        k = 0
        for path in dict.fromkeys(s.file for s in layout.slots.values()):
            slots = sorted((s for s in layout.slots.values() if s.file == path), key=lambda s: s.begin)
            if not slots:
                continue
            first, last = slots[0].begin, max(s.end for s in slots)
            with open(path, "rb", buffering=0) as f:
                f.seek(first)
                i = 0  # first slot that may overlap the current chunk
                for chunk in range(first, last, staging_bytes):
                    b = k % 2
                    if used[b]:
                        drv.event_sync(events[b])
                    n = min(staging_bytes, last - chunk)
                    _read_exact(f, memoryview(host_array(buffers[b], n)), path)
                    while i < len(slots) and slots[i].end <= chunk:
                        i += 1
                    for s in slots[i:]:
                        if s.begin >= chunk + n:
                            break
                        lo, hi = max(s.begin, chunk), min(s.end, chunk + n)
                        if hi > lo:
                            drv.copy_htod(base + s.offset + (lo - s.begin), buffers[b] + (lo - chunk), hi - lo, stream)
                    drv.event_record(events[b], stream)
                    used[b] = True
                    k += 1
        drv.sync(stream)
    finally:
        try:  # no copy may still read the staging buffers when they are freed
            drv.sync(stream)
        except Exception:
            pass
        for event in events:
            drv.event_destroy(event)
        for ptr in buffers:
            drv.free_host(ptr)


def _read_exact(f, view: memoryview, path: Path) -> None:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            raise BundleError(f"{path.name}: ended early while uploading weights; the bundle is truncated: copy it again")
        got += n


# ---- the KV pool ---------------------------------------------------------------------------


@dataclass(frozen=True)
class KvSpec:
    num_layers: int
    block_size: int
    num_kv_heads: int
    head_dim: int
    dtype: str

    @classmethod
    def from_manifest(cls, manifest: dict) -> "KvSpec":
        kv = manifest["kv_cache"]
        return cls(kv["num_layers"], kv["block_size"], kv["num_kv_heads"], kv["head_dim"], kv["dtype"])

    @property
    def bytes_per_block(self) -> int:
        """K and V of every layer for one block of tokens."""
        return 2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_dim * DTYPES[self.dtype]

    def pool_bytes(self, num_blocks: int) -> int:
        """One layer's K (or V) pool, [num_blocks, block_size, Hk, hd], padded to 256 bytes."""
        return align(num_blocks * self.block_size * self.num_kv_heads * self.head_dim * DTYPES[self.dtype])

    def total_bytes(self, num_blocks: int) -> int:
        return 2 * self.num_layers * self.pool_bytes(num_blocks)

    def pointer(self, base: int, num_blocks: int, layer: int, which: str) -> int:
        if not 0 <= layer < self.num_layers or which not in ("k", "v"):
            raise BundleError(f"a plan names KV cache {which!r} of layer {layer}; the bundle has "
                              f"{self.num_layers} layers of 'k' and 'v': rebuild the bundle")
        return base + (2 * layer + (which == "v")) * self.pool_bytes(num_blocks)


def kv_blocks_for_memory(free: int, utilization: float, reserve: int, spec: KvSpec, cap: int) -> tuple[int, str]:
    """(number of KV blocks, what limited it): floor((free * utilization - reserve) / bytes_per_block),
    where `free` is what is left after the weights and the arena; never more than `cap` blocks, nor
    more slots than an int32 slot index can name."""
    cap = min(cap, (2**31 - 1) // spec.block_size)
    budget = int(free * utilization) - reserve
    by_memory = max(0, budget // spec.bytes_per_block)
    # total_bytes pads each of the 2L pools to 256 bytes; leave room for that padding
    while by_memory and spec.total_bytes(by_memory) > budget:
        by_memory -= 1
    if by_memory >= cap:
        return cap, "block count limit"
    return by_memory, "gpu memory"


# ---- lifetime ------------------------------------------------------------------------------


class Allocations:
    """Every device and pinned-host allocation of a backend, freed in reverse order at close."""

    def __init__(self, drv):
        self.drv = drv
        self.device: list[int] = []
        self.host: list[int] = []
        self.device_bytes = 0

    def alloc(self, nbytes: int, what: str) -> int:
        try:
            ptr = self.drv.alloc(nbytes)
        except Exception as e:
            if "OUT_OF_MEMORY" in str(e):
                raise BundleError(f"out of GPU memory allocating {nbytes / 2**30:.2f} GiB for {what}; free the GPU, "
                                  "lower --gpu-memory-utilization or use a smaller model") from None
            raise
        self.device.append(ptr)
        self.device_bytes += nbytes
        return ptr

    def alloc_host(self, nbytes: int) -> int:
        ptr = self.drv.alloc_host(nbytes)
        self.host.append(ptr)
        return ptr

    def free_all(self) -> None:
        errors = []
        for free, ptrs in ((self.drv.free, self.device), (self.drv.free_host, self.host)):
            while ptrs:
                try:
                    free(ptrs.pop())
                except Exception as e:  # keep freeing the rest
                    errors.append(e)
        self.device_bytes = 0
        if errors:
            raise errors[0]


# ---- per-plan inputs and outputs -----------------------------------------------------------


def input_offsets(plan: dict) -> tuple[dict[str, int], int]:
    """Each input's byte offset in the plan's input block (256-aligned), and the block's size. The
    sparse inputs (sparse_inputs.py) come last, so every other input lies in one leading run."""
    offsets, size = {}, 0
    for key in sorted(plan["inputs"], key=lambda k: k in NEUTRAL):  # stable: the plan's order otherwise
        spec = plan["inputs"][key]
        offsets[key] = size
        size = align(size + math.prod(spec["shape"]) * DTYPES[spec["dtype"]])
    return offsets, size


def host_view(ptr: int, shape, dtype: str) -> np.ndarray:
    """A numpy array over pinned host memory at `ptr` (no copy)."""
    from .driver import host_array

    nbytes = math.prod(shape) * DTYPES[dtype]
    raw = np.frombuffer(host_array(ptr, max(nbytes, 1)), dtype=np.uint8)[:nbytes]
    return raw.view(dtype).reshape(shape)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Copied-out device values as float32; bfloat16 (absent from numpy) is the high half of a float32."""
    if dtype == "bfloat16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def copy_bandwidth(drv, stream, nbytes: int = 1 << 30, iters: int = 10, repeats: int = 3) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + written), timed with events; median of repeats."""
    nbytes = min(nbytes, (drv.mem_info()[0] - (64 << 20)) // 2) // (1 << 20) * (1 << 20)
    if nbytes < (64 << 20):
        raise BundleError("not enough free GPU memory to measure the copy bandwidth (needs 128 MiB)")
    src = dst = start = end = None
    try:
        src, dst = drv.alloc(nbytes), drv.alloc(nbytes)
        drv.memset_d8(src, 0x5A, nbytes, stream)
        start, end = drv.event_create(), drv.event_create()
        drv.copy_dtod(dst, src, nbytes, stream)  # warm-up
        rates = []
        for _ in range(repeats):
            drv.event_record(start, stream)
            for _ in range(iters):
                drv.copy_dtod(dst, src, nbytes, stream)
            drv.event_record(end, stream)
            drv.event_sync(end)
            rates.append(2 * nbytes * iters / (drv.elapsed_ms(start, end) / 1e3))
        return float(sorted(rates)[len(rates) // 2])
    finally:
        for event in (start, end):
            if event is not None:
                drv.event_destroy(event)
        for ptr in (src, dst):
            if ptr is not None:
                drv.free(ptr)
