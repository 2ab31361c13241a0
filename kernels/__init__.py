"""Triton kernels, one file per op family; importing this package registers their impls on the IR ops."""

from . import activation, attention, cache, embedding, fused_linear, linear, norm, rotary, sampling, tensor  # noqa: F401
