"""Weights as a stream: an IR parameter is a `Weight`, its shape and dtype plus how to make it.

Nothing is read until `load()`: ingest describes every checkpoint tensor by where its bytes are,
build-time transforms (cast, concatenation, ...) make new descriptions from old ones, and the
writer loads one output tensor at a time. Peak memory is the largest output tensor and the
inputs of its transform, whatever the model size. A transform is a function from `Weight`s
(or plain tensors) to a `Weight`; new ones (a `1 + w` norm fold, FP8 quantization, a tensor-
parallel shard) are one such function and a row in a table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

import torch

TORCH_DTYPES = {  # safetensors dtype -> torch dtype, for the dtypes a checkpoint's weights may have
    "F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class Source:
    """One tensor's bytes in a checkpoint shard: [begin, end) of the file."""

    path: Path
    name: str
    dtype: str  # safetensors dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    def read(self) -> torch.Tensor:
        data = torch.empty(self.end - self.begin, dtype=torch.uint8)
        self.read_into(data)
        return data.view(TORCH_DTYPES[self.dtype]).reshape(self.shape)

    def read_into(self, out: torch.Tensor) -> None:
        """Read the bytes into `out`, a contiguous tensor of as many bytes (a slice of a concatenation, say)."""
        if not out.is_contiguous():
            raise ValueError(f"{self.name!r}: read into a tensor that is not contiguous")
        view, done = memoryview(out.view(-1).view(torch.uint8).numpy()), 0
        if len(view) != self.end - self.begin:
            raise ValueError(f"{self.name!r}: {self.end - self.begin} bytes do not fit a tensor of {len(view)}")
        with open(self.path, "rb", buffering=0) as f:
            f.seek(self.begin)
            while done < len(view):
                n = f.readinto(view[done:])
                if not n:
                    raise OSError(f"{self.path.name}: short read of tensor {self.name!r}")
                done += n


@dataclass(frozen=True)
class Weight:
    shape: tuple[int, ...]
    dtype: torch.dtype
    make: Callable[[], torch.Tensor]
    doc: str  # what it is made of, for `stop_after` dumps

    def load(self) -> torch.Tensor:
        tensor = self.make()
        if tuple(tensor.shape) != self.shape or tensor.dtype != self.dtype:
            raise AssertionError(f"{self.doc}: made {tuple(tensor.shape)} {tensor.dtype}, declared {self.shape} {self.dtype}")
        return tensor.contiguous()

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class CheckpointWeight(Weight):
    """A checkpoint tensor as it is stored (no cast): a concatenation reads its bytes straight into place."""

    source: Source


WeightLike = Union[Weight, torch.Tensor]


def load(w: WeightLike) -> torch.Tensor:
    return w if isinstance(w, torch.Tensor) else w.load()


def shape_of(w: WeightLike) -> tuple[int, ...]:
    return tuple(w.shape)


# -- transforms -------------------------------------------------------------------------------


def concat(parts: list[WeightLike]) -> Weight:
    # [A; B; ...] along dim 0 (q/k/v -> qkv, gate/up -> gate_up)
    shapes = [shape_of(p) for p in parts]
    shape = (sum(s[0] for s in shapes), *shapes[0][1:])
    docs = [p.doc if isinstance(p, Weight) else "tensor" for p in parts]
    return Weight(shape, parts[0].dtype, lambda: _concatenated(parts, shape), f"concat({', '.join(docs)})")


def _concatenated(parts: list[WeightLike], shape: tuple[int, ...]) -> torch.Tensor:
    dtype = parts[0].dtype
    if not all(isinstance(p, CheckpointWeight) and p.dtype == dtype for p in parts):
        return torch.cat([load(p) for p in parts])
    # the checkpoint's bytes read into place: the tensor torch.cat makes, one copy fewer
    out, row = torch.empty(shape, dtype=dtype), 0
    for p in parts:
        p.source.read_into(out[row:row + p.shape[0]])
        row += p.shape[0]
    return out


def constant(tensor: torch.Tensor, doc: str) -> Weight:
    # a table the build computed (rope cos/sin)
    return Weight(tuple(tensor.shape), tensor.dtype, lambda: tensor, doc)


def transformed(name: str, sources: list[Source], dtype: torch.dtype) -> Weight:
    # checkpoint tensors -> one IR parameter, through a function of aot/weight_transforms.py
    from .weight_transforms import apply

    label = ", ".join(f"{s.path.name}:{s.name}" for s in sources[:2]) + (", ..." if len(sources) > 2 else "")
    make, doc = (lambda: apply(name, [s.read() for s in sources], dtype, label)), f"{name}({label}) as {dtype}"
    if all(TORCH_DTYPES[s.dtype] == dtype for s in sources):  # no cast: the bytes can be read straight into place
        if name == "copy":
            return CheckpointWeight(tuple(sources[0].shape), dtype, make, doc, sources[0])
        if name in _IN_PLACE:  # (ingest checked every part's shape against the config)
            rows = _IN_PLACE[name](sources)
            shape = (len(rows), sum(s.shape[0] for s in rows[0]), *sources[0].shape[1:])
            return Weight(shape, dtype, lambda: _read_in_place(rows, shape, dtype), doc)
    meta = [torch.empty(s.shape, dtype=TORCH_DTYPES[s.dtype], device="meta") for s in sources]
    out = apply(name, meta, dtype)  # the output's shape and dtype, from no data
    return Weight(tuple(out.shape), out.dtype, make, doc)


def _read_in_place(rows: list[list[Source]], shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    # out[e] is the concatenation of rows[e] (along dim 0): what torch.stack of torch.cat makes, without either copy
    out = torch.empty(shape, dtype=dtype)
    for e, parts in enumerate(rows):
        row = 0
        for source in parts:
            source.read_into(out[e, row:row + source.shape[0]])
            row += source.shape[0]
    return out


_IN_PLACE = {  # transforms of aot/weight_transforms.py that only place tensors: expert e's parts, in order
    "stack": lambda sources: [[s] for s in sources],
    "stack_gate_up": lambda sources: [list(pair) for pair in zip(sources[:len(sources) // 2], sources[len(sources) // 2:])],
}
