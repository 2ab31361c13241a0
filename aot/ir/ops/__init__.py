"""The IR's ops. Importing this package registers every op (and its native impl)."""

from . import activation, attention, attention_split, cache, collective, fp8, fused, linear, moe, norm, rotary, sampling, tensor  # noqa: F401
from ..op import OPS

__all__ = ["OPS"]
