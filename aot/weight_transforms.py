"""Build-time weight transforms: each a pure function from the HF tensors of one IR parameter to it.

The weight map (`aot/families/weights.py`) names one per parameter; each reads only its own
tensors, so a streaming reader can apply it as soon as they have been read.
"""

import torch

from llmc.errors import UserError


def copy(tensors: list[torch.Tensor]) -> torch.Tensor:
    (t,) = tensors
    return t


def plus_one(tensors: list[torch.Tensor]) -> torch.Tensor:
    # Gemma's RMS norm scales by (1 + w), computed in float32: fold it into the weight once
    (t,) = tensors
    return t.float() + 1.0


def stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    # E experts' [N, K] -> [E, N, K]
    return torch.stack(tensors)


def stack_gate_up(tensors: list[torch.Tensor]) -> torch.Tensor:
    # E gates then E ups, each [I, H] -> [E, 2I, H], expert e = [gate_e; up_e]
    half = len(tensors) // 2
    return torch.stack([torch.cat(pair) for pair in zip(tensors[:half], tensors[half:])])


TRANSFORMS = {f.__name__: f for f in (copy, plus_one, stack, stack_gate_up)}


def apply(name: str, tensors: list[torch.Tensor], dtype: torch.dtype, label: str = "") -> torch.Tensor:
    out = TRANSFORMS[name](tensors).to(dtype)
    if dtype == torch.float16 and out.device.type != "meta" and not bool(torch.isfinite(out).all()):
        # the checkpoint's values are finite (ingest checked), so the cast overflowed
        raise UserError(f"{label or name}: values beyond float16's range (65504) after --dtype float16; "
                        "build with --dtype bfloat16 or float32")
    return out
