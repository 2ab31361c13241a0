"""Rotary embedding tables, computed once at build time for every supported scaling.

The result is one float32 tensor [max_positions, head_dim]: cos of each frequency in the first
half, sin in the second. The ops read it; the scaling never reaches a kernel.

Every value lands in the bundle, so none may depend on the build machine: the math is scalar
float64 (Python's `math`, never a vectorised or threaded kernel) and each value is rounded to
float32 once. Frequencies and angles are rounded to float32 where Hugging Face computes them in
float32, so the table is theirs evaluated with a correctly-behaved cos and sin.
"""

import math

import numpy as np
import torch

from llmc.errors import UserError

SCALINGS = ("default", "linear", "llama3", "longrope")


def _f32(x: float) -> float:
    return float(np.float32(x))


def inverse_frequencies(head_dim: int, theta: float, scaling: dict) -> torch.Tensor:
    inv_freq = [_f32(1.0 / _f32(theta ** _f32(i / head_dim))) for i in range(0, head_dim, 2)]  # as torch does it in float32
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        values = inv_freq
    elif kind == "linear":
        values = [_f32(f / float(scaling["factor"])) for f in inv_freq]
    elif kind == "llama3":
        values = [_f32(_llama3(f, scaling)) for f in inv_freq]
    elif kind == "longrope":
        values = _longrope(head_dim, theta, scaling)
    else:
        raise UserError(f"config.json: rope scaling type {kind!r} is not supported; supported: {', '.join(SCALINGS)}")
    return torch.tensor(values, dtype=torch.float32)


def _longrope(head_dim: int, theta: float, scaling: dict) -> list[float]:
    # Phi-3: 1 / (short_factor[i] * theta^(2i/d)); a bundle never reaches the long factors (see aot/model.py)
    short = scaling.get("short_factor")
    if not isinstance(short, list) or len(short) != head_dim // 2:
        raise UserError(f"config.json: field 'short_factor' of the longrope scaling needs {head_dim // 2} numbers (half the rotary width)")
    return [_f32(1.0 / _f32(_f32(float(f)) * _f32(theta ** _f32(i / head_dim)))) for f, i in zip(short, range(0, head_dim, 2))]


def attention_factor(scaling: dict) -> float:
    """What longrope multiplies cos and sin by: sqrt(1 + ln(factor) / ln(original context)) unless given."""
    if scaling.get("rope_type") != "longrope":
        return 1.0
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    original = float(scaling["original_max_position_embeddings"])
    factor = float(scaling.get("max_position_embeddings", original)) / original
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))


def _llama3(inv_freq: float, scaling: dict) -> float:
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    original = float(scaling["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    if wavelen < original / high:
        return inv_freq
    if wavelen > original / low:
        return inv_freq / factor
    smooth = (original / wavelen - low) / (high - low)
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def cos_sin_cache(head_dim: int, theta: float, scaling: dict, max_positions: int) -> torch.Tensor:
    inv_freq = inverse_frequencies(head_dim, theta, scaling).numpy().astype(np.float64)
    # position * frequency is exact in float64; rounding it to float32 gives torch.outer's float32 angle
    angles = (np.arange(max_positions, dtype=np.float64)[:, None] * inv_freq[None, :]).astype(np.float32)
    flat = angles.astype(np.float64).ravel().tolist()
    cos = np.array([math.cos(a) for a in flat], dtype=np.float32).reshape(angles.shape)
    sin = np.array([math.sin(a) for a in flat], dtype=np.float32).reshape(angles.shape)
    factor = attention_factor(scaling)
    if factor != 1.0:  # longrope: cos and sin rounded, times the factor rounded, rounded again (as HF in float32)
        cos, sin = cos * np.float32(factor), sin * np.float32(factor)
    return torch.from_numpy(np.concatenate((cos, sin), axis=1))
