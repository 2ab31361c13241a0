"""Triton kernels, one file per op family; importing this package registers their impls on the IR ops."""

from . import activation, attention, attention_split, cache, collective, elementwise, embedding, fp8_gemv, fp8_linear, fused_linear, linear, logit_edits, logprobs, moe, moe_route, norm, rotary, sampling, tensor, vocab_parallel  # noqa: F401
