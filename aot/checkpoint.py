"""One pass over a checkpoint: check every tensor and hash every input file, in bounded memory.

The pass reads each shard in file order through one reusable buffer. Each chunk is hashed (the
build key covers the input's bytes) and, for float tensors, checked for NaN/Inf on its own bit
pattern (an all-ones exponent, numpy on an unsigned view), so no tensor is ever converted or held whole. It also refuses a
tensor that two shards both hold.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.errors import UserError

from .weights import Source

CHUNK = 1 << 24  # bytes per read
KEYED_SUFFIXES = (".json", ".safetensors", ".model", ".txt")  # input files the build key covers
# safetensors dtype -> (unsigned view, magnitude bits, least non-finite magnitude): a value is NaN or
# infinite exactly when its bits less the sign are at least that of +inf (all-ones exponent)
NONFINITE_MASKS = {
    "F64": (np.uint64, 0x7FFFFFFFFFFFFFFF, 0x7FF0000000000000), "F32": (np.uint32, 0x7FFFFFFF, 0x7F800000),
    "BF16": (np.uint16, 0x7FFF, 0x7F80), "F16": (np.uint16, 0x7FFF, 0x7C00),
    "F8_E5M2": (np.uint8, 0x7F, 0x7C), "F8_E4M3": (np.uint8, 0x7F, 0x7F),  # e4m3fn: no infinities, NaN is S1111111
}


@dataclass
class Checkpoint:
    tensors: dict[str, Source]  # HF name -> where its bytes are
    digest: "hashlib._Hash"  # sha256 over every keyed input file (name, then bytes), in name order


def scan(model_dir: Path, shards: list[Path]) -> Checkpoint:
    from llmc.artifacts.safetensors_check import tensor_spans

    digest, tensors = hashlib.sha256(), {}
    shard_set = set(shards)
    with ThreadPoolExecutor(1) as hasher:  # hashing one chunk overlaps reading and checking the next
        reader = _Reader(digest, hasher)
        for path in sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix in KEYED_SUFFIXES):
            reader.wait()  # the worker may still be hashing the previous file's last chunk
            digest.update(path.name.encode() + b"\0")
            if path not in shard_set:
                reader.hash(path, 0, path.stat().st_size)
                continue
            spans = tensor_spans(path)
            start = min((begin for _, _, begin, _ in spans.values()), default=path.stat().st_size)
            reader.hash(path, 0, start)  # length field and header
            for name, (dtype, shape, begin, end) in sorted(spans.items(), key=lambda item: item[1][2]):
                if name in tensors:
                    raise UserError(f"{path.name}: tensor {name!r} is also in {tensors[name].path.name}; a tensor must be "
                                    "in one shard only: download the checkpoint again")
                tensors[name] = Source(path, name, dtype, shape, begin, end)
                if not reader.hash(path, begin, end, NONFINITE_MASKS.get(dtype)):
                    raise UserError(f"{path.name}: tensor {name!r} holds NaN or infinite values")
        reader.wait()
    return Checkpoint(tensors, digest)


class _Reader:
    """Reads byte ranges through two alternating buffers; the hasher thread digests one while the next is read."""

    def __init__(self, digest, hasher: ThreadPoolExecutor):
        self.digest, self.hasher = digest, hasher
        self.buffers = [bytearray(CHUNK), bytearray(CHUNK)]
        self.turn, self.pending = 0, None

    def hash(self, path: Path, begin: int, end: int, mask=None) -> bool:
        """Hash bytes [begin, end) of `path`; with a mask, also return whether every value is finite."""
        finite = True
        with open(path, "rb", buffering=0) as f:
            f.seek(begin)
            left = end - begin
            while left:
                buffer = self.buffers[self.turn]
                self.turn ^= 1
                n = f.readinto(memoryview(buffer)[:min(left, CHUNK)])
                if not n:
                    raise UserError(f"{path.name}: ends before byte {end}; the file is truncated: download it again")
                self.wait()
                self.pending = self.hasher.submit(self.digest.update, memoryview(buffer)[:n])
                if mask is not None and finite:
                    finite = not _any_nonfinite(buffer, n, *mask)
                left -= n
        return finite

    def wait(self) -> None:
        if self.pending is not None:
            self.pending.result()
            self.pending = None


def _any_nonfinite(buffer: bytearray, n: int, view, magnitude: int, least: int) -> bool:
    values = np.frombuffer(buffer, dtype=view, count=n // np.dtype(view).itemsize)
    return bool(values.size) and int(np.bitwise_and(values, view(magnitude)).max()) >= least
