"""FP8 weights as per-tensor transforms of the weight stream (see `aot/weights.py`).

A quantized linear is two IR parameters: `<name>.weight` [N, K] float8_e4m3fn and
`<name>.weight_scale` [N, ceil(K / G)] float32 (G the block size; [N, 1] per channel or tensor),
the layout the fp8 ops read (`aot/ir/ops/fp8.py`). Checkpoint scales are checked (shape, sign)
at ingest, before any work: they are small. Every other FP8 tensor (an embedding, a head) is
dequantized to the build's dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from llmc.errors import UserError

from .ir.ops.fp8 import FP8, dequantize_fp8, quantize_fp8, row_scales_fp8
from .quantize import Scheme
from .weights import Source, Weight

LINEAR = re.compile(r"layers\.\d+\.\w+_proj\.weight")  # the decoder layers' linears; routers and experts stay 16-bit
SCALE_DTYPES = ("F32", "BF16", "F16")


@dataclass(frozen=True)
class ScaleWeight(Weight):
    """A linear's weight_scale, which knows the fp8 ops' group_size it was made for."""

    group_size: int = 0


def scale_name(ir: str) -> str:
    return ir.removesuffix(".weight") + ".weight_scale"


def quantized_linears(params: dict) -> dict:
    """`--quantize fp8`: every decoder-layer linear weight as an e4m3 weight and its per-channel scale."""
    out = {}
    for name, weight in params.items():
        if LINEAR.fullmatch(name):
            n = weight.shape[0]
            out[name] = Weight(weight.shape, FP8, lambda w=weight: quantize_fp8(w.load(), 0)[0], f"fp8({weight.doc})")
            out[scale_name(name)] = ScaleWeight((n, 1), torch.float32, lambda w=weight: row_scales_fp8(w.load()),
                                                f"fp8_scale({weight.doc})", 0)
        else:
            out[name] = weight
    return out


def scale_sources(present: dict[str, Source], scheme: Scheme | None) -> dict[str, Source]:
    """HF weight name -> its scale tensor; every FP8 tensor must have one, of a dtype a scale can have."""
    scales = {}
    for name, source in present.items():
        if source.dtype not in ("F8_E4M3", "F8_E5M2"):
            continue
        if scheme is None:
            raise UserError(f"{source.path.name}: tensor {name!r} is {source.dtype} but config.json has no "
                            "quantization_config saying how it is scaled")
        if source.dtype != "F8_E4M3":
            raise UserError(f"{source.path.name}: tensor {name!r} is {source.dtype}; llmc reads e4m3 FP8 weights only")
        scale = name.removesuffix("weight") + scheme.scale_suffix
        if not name.endswith(".weight") or scale not in present:
            raise UserError(f"{source.path.name}: FP8 tensor {name!r} has no scale tensor {scale!r}")
        if present[scale].dtype not in SCALE_DTYPES:
            raise UserError(f"{present[scale].path.name}: scale tensor {scale!r} is {present[scale].dtype}; "
                            f"a scale must be one of {', '.join(SCALE_DTYPES)}")
        scales[name] = present[scale]
    return scales


def checkpoint_params(ir: str, weight: Source, scale: Source, scheme: Scheme, dtype: torch.dtype) -> dict[str, Weight]:
    """One FP8 checkpoint tensor -> its IR parameters: a linear's (weight, scale), or any other dequantized."""
    if len(weight.shape) != 2:
        raise UserError(f"{weight.path.name}: FP8 tensor {weight.name!r} has shape {list(weight.shape)}; "
                        "llmc reads FP8 matrices only")
    rows = _scales(weight, scale, scheme)
    group = scheme.group_size
    doc = f"{weight.path.name}:{weight.name}"
    if LINEAR.fullmatch(ir):
        return {ir: Weight(weight.shape, FP8, weight.read, doc),
                scale_name(ir): ScaleWeight(tuple(rows.shape), torch.float32, lambda: rows, f"scale of {doc}", group)}
    return {ir: Weight(weight.shape, dtype, lambda: dequantize_fp8(weight.read(), rows, group).to(dtype),
                       f"dequantized {doc} as {dtype}")}


def _scales(weight: Source, scale: Source, scheme: Scheme) -> torch.Tensor:
    """The checkpoint's scale tensor, checked, as [N, ceil(K / G)] float32 (block rows repeated per weight row)."""
    n, k = weight.shape
    g = scheme.group_size
    if g:
        want = (((n + g - 1) // g, (k + g - 1) // g),)
    else:
        want = {"channel": ((n, 1), (n,)), "tensor": ((), (1,), (1, 1))}[scheme.granularity]
    if tuple(scale.shape) not in want:
        raise UserError(f"{scale.path.name}: scale tensor {scale.name!r} has shape {list(scale.shape)}; a "
                        f"{scheme.granularity} scale of the [{n}, {k}] weight {weight.name!r} has shape {list(want[0])}")
    values = scale.read().float()
    bad = ~(values > 0) | ~torch.isfinite(values)
    if bool(bad.any()):
        raise UserError(f"{scale.path.name}: scale tensor {scale.name!r} holds {values[bad][0].item()}; "
                        "every scale must be positive and finite")
    if g:
        return values.repeat_interleave(g, dim=0)[:n].contiguous()
    return values.reshape(-1, 1).expand(n, 1).contiguous()
