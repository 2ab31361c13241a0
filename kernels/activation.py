"""Gated activations over the merged [gate | up] projection: act(gate) * up, act = SiLU or tanh-GELU."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS

SILU, GELU_TANH = 0, 1
ACTIVATIONS = {"silu_and_mul": SILU, "gelu_tanh_and_mul": GELU_TANH}  # gated op -> ACT constexpr


@triton.jit
def gate_act(g, ACT: tl.constexpr):
    """act(g) in float32 for float32 g: silu, or gelu with the tanh approximation."""
    if ACT == 0:
        y = g / (1.0 + tl.exp(-g))
    else:
        inner = 0.7978845608028654 * (g + 0.044715 * g * g * g)  # sqrt(2 / pi) * (g + 0.044715 g^3)
        tanh = 1.0 - 2.0 / (tl.exp(2.0 * inner) + 1.0)
        y = 0.5 * g * (1.0 + tanh)
    return y


@triton.jit
def silu_and_mul_kernel(
    # pointers
    x_ptr, out_ptr,
    # sizes
    width, stride_x, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
    ACT: tl.constexpr,  # SILU | GELU_TANH
):
    # program (t, c): columns c*BLOCK ... of token t; gate is x[t, :width], up is x[t, width:]
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < width
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + width + cols, mask=mask, other=0.0)
    act = gate_act(gate.to(tl.float32), ACT).to(gate.dtype)  # in float32, rounded to the input dtype as torch does
    tl.store(out_ptr + row * stride_out + cols, act.to(tl.float32) * up.to(tl.float32), mask=mask)


def _supports(x):
    return x.dim() == 2 and x.shape[1] % 2 == 0 and x.stride(1) == 1


def gated_launch(op: str, x, out=Out(0)):
    # grid (tokens, column blocks of up to 1024 outputs)
    width = x.shape[1] // 2
    block = min(triton.next_power_of_2(width), 1024)
    return Launch(silu_and_mul_kernel, grid=(x.shape[0], triton.cdiv(width, block)),
                  args=(x, out, width, x.stride(0), width), constexprs={"BLOCK": block, "ACT": ACTIVATIONS[op]}, num_warps=4)


@OPS["silu_and_mul"].register_impl("triton", targets=GPU_TARGETS, launches=True, supports_args=_supports)
def silu_and_mul_triton(x):
    return [gated_launch("silu_and_mul", x)]


@OPS["gelu_tanh_and_mul"].register_impl("triton", targets=GPU_TARGETS, launches=True, supports_args=_supports)
def gelu_tanh_and_mul_triton(x):
    return [gated_launch("gelu_tanh_and_mul", x)]
