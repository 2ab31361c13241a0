"""Write a safetensors file one tensor at a time, the header first, hashing the bytes as they go.

The bytes equal `safetensors.torch.save` of the same tensors: entries ordered by dtype (widest
first, as the library orders them) then name, compact JSON, the header padded with spaces to a
multiple of 8 bytes. Only the header and one tensor's bytes are in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

from .safetensors_check import DTYPES

# the safetensors library's order of dtypes in a file it writes
DTYPE_ORDER = ("U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL")

SLICE = 1 << 24  # bytes hashed per task while the writer writes


@dataclass(frozen=True)
class Entry:
    name: str
    dtype: str  # safetensors dtype
    shape: tuple[int, ...]
    data: Callable[[], memoryview]  # the tensor's bytes, made when the writer reaches it

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPES[self.dtype]


def ordered(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (DTYPE_ORDER.index(e.dtype), e.name))


def header(entries: list[Entry]) -> bytes:
    """Length field and JSON header for `entries` (in file order)."""
    fields, offset = {}, 0
    for e in entries:
        fields[e.name] = {"dtype": e.dtype, "shape": list(e.shape), "data_offsets": [offset, offset + e.nbytes]}
        offset += e.nbytes
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


def write(path: str | os.PathLike, entries: list[Entry]) -> tuple[str, int]:
    """Write the file; return its sha256 and size, computed while writing."""
    return write_side_by_side([path], [entries])[0]


def write_side_by_side(paths: list[str | os.PathLike], files: list[list[Entry]]) -> list[tuple[str, int]]:
    """Write several files at once: every header, then each file's first tensor, then each one's second, ...
    (the tensor-parallel ranks' shards of one weight one after another, so they can share one load of it).
    Each file's bytes are those `write` makes of it alone; return each one's sha256 and size."""
    files = [ordered(entries) for entries in files]
    digests, sizes = [hashlib.sha256() for _ in paths], [0] * len(paths)
    # a second thread hashes each slice while this one writes it (both release the GIL); a tensor is
    # dropped only once it is hashed, so memory stays one tensor
    with ExitStack() as stack, ThreadPoolExecutor(1) as hasher:
        outs = [stack.enter_context(open(path, "wb")) for path in paths]
        for k, chunk in _chunks(files):
            hashed = [hasher.submit(digests[k].update, piece) for piece in _slices(chunk)]
            outs[k].write(chunk)
            sizes[k] += len(chunk)
            for h in hashed:
                h.result()
            del chunk, hashed
    return [(digest.hexdigest(), size) for digest, size in zip(digests, sizes)]


def _slices(data: memoryview) -> list[memoryview]:
    return [data[i:i + SLICE] for i in range(0, len(data), SLICE)] or [data]


def _chunks(files: list[list[Entry]]):
    # (file index, bytes): the headers, then the files' tensors position by position
    for k, entries in enumerate(files):
        yield k, header(entries)
    for position in range(max(map(len, files), default=0)):
        for k, entries in enumerate(files):
            if position < len(entries):
                yield k, _data(entries[position])


def _data(e: Entry) -> memoryview:
    data = memoryview(e.data()).cast("B")
    if len(data) != e.nbytes:
        raise ValueError(f"tensor {e.name!r}: {len(data)} bytes made, its shape {list(e.shape)} of {e.dtype} needs {e.nbytes}")
    return data
