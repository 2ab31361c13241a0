"""Gated activations: silu(gate) * up over the merged [gate | up] projection."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def silu_and_mul_kernel(
    # pointers
    x_ptr, out_ptr,
    # sizes
    width, stride_x, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): columns c*BLOCK ... of token t; gate is x[t, :width], up is x[t, width:]
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + width + cols, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)  # silu in float32, rounded to the input dtype as torch does
    tl.store(out_ptr + row * stride_out + cols, act.to(tl.float32) * up.to(tl.float32), mask=mask)


@OPS["silu_and_mul"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x: x.dim() == 2 and x.shape[1] % 2 == 0 and x.stride(1) == 1,
)
def silu_and_mul_triton(x):
    # grid (tokens, column blocks of up to 1024 outputs)
    width = x.shape[1] // 2
    block = min(triton.next_power_of_2(width), 1024)
    return [
        Launch(
            silu_and_mul_kernel,
            grid=(x.shape[0], triton.cdiv(width, block)),
            args=(x, Out(0), width, x.stride(0), width),
            constexprs={"BLOCK": block},
            num_warps=4,
        )
    ]
