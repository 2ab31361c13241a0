"""Elementwise scalar ops: `scale` (x * factor) and `soft_cap` (cap * tanh(x / cap))."""

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS

BLOCK = 1024


@triton.jit
def scalar_op_kernel(
    # pointers
    x_ptr, out_ptr,
    # sizes
    n, value,
    # meta-parameters
    OP: tl.constexpr,  # SCALE: x * value | SOFT_CAP: value * tanh(x / value)
    BLOCK: tl.constexpr,
):
    # program i: elements i*BLOCK ...; in float32, rounded once to x's dtype
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if OP == 0:
        y = x.to(tl.float32) * value
    else:
        tanh = 1.0 - 2.0 / (tl.exp(2.0 * x.to(tl.float32) / value) + 1.0)
        y = tanh * value
    tl.store(out_ptr + offs, y.to(x.dtype), mask=mask)


SCALE, SOFT_CAP = 0, 1


def _contiguous(x):
    return x.is_contiguous() and x.numel() > 0


def _launch(op, x, value):
    return [Launch(scalar_op_kernel, grid=(triton.cdiv(x.numel(), BLOCK),), args=(x, Out(0), x.numel(), float(value)),
                   constexprs={"OP": op, "BLOCK": BLOCK}, num_warps=4)]


@OPS["scale"].register_impl("triton", targets=GPU_TARGETS, launches=True,
                            supports_args=lambda x, factor: _contiguous(x))
def scale_triton(x, factor):
    return _launch(SCALE, x, torch.tensor(factor, dtype=x.dtype).item())  # the factor rounded as the op does


@OPS["soft_cap"].register_impl("triton", targets=GPU_TARGETS, launches=True,
                               supports_args=lambda x, cap: _contiguous(x))
def soft_cap_triton(x, cap):
    return _launch(SOFT_CAP, x, cap)
