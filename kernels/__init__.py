"""Triton kernels, one file per op family; importing this package registers their impls on the IR ops."""

from . import activation, attention, attention_split, cache, elementwise, embedding, fp8_gemv, fp8_linear, fused_linear, linear, moe, moe_route, norm, rotary, sampling, tensor  # noqa: F401
