"""RMS normalisation kernels: plain, fused with the residual add, and per attention head.

One kernel serves all three ops: a row of `rms_norm` is a single head as wide as the row.
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def rms_norm_kernel(
    # pointers
    x_ptr, residual_ptr, weight_ptr, out_ptr, summed_ptr,
    # sizes
    stride_x, stride_residual, stride_out, stride_summed, n_heads, head_dim, eps,
    # meta-parameters
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
):
    # program (row, g) normalises heads g*BLOCK_H ... of one row, each over its head_dim columns
    row = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    cols = tl.arange(0, BLOCK_D)
    mask = (heads < n_heads)[:, None] & (cols < head_dim)[None, :]
    offs = heads[:, None] * head_dim + cols[None, :]  # [BLOCK_H, BLOCK_D]
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        residual = tl.load(residual_ptr + row * stride_residual + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + residual.to(tl.float32)).to(x.dtype)  # x + residual, rounded like torch
        tl.store(summed_ptr + row * stride_summed + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 1) / head_dim + eps)  # [BLOCK_H]
    y = (xf * rstd[:, None]).to(x.dtype)  # the scale is applied in the input dtype, as HF does
    weight = tl.load(weight_ptr + cols, mask=cols < head_dim, other=0.0)
    tl.store(out_ptr + row * stride_out + offs, weight.to(tl.float32)[None, :] * y.to(tl.float32), mask=mask)


def _launch(x, residual, weight, eps, head_dim, outputs):
    # grid (rows, head groups); a group holds up to ~2048 elements, a plain row is one group
    rows, cols = x.shape
    heads = cols // head_dim
    block_d = triton.next_power_of_2(head_dim)
    block_h = min(triton.next_power_of_2(heads), max(1, 2048 // block_d))
    out, summed = outputs
    return [
        Launch(
            rms_norm_kernel,
            grid=(rows, triton.cdiv(heads, block_h)),
            args=(x, residual, weight, out, summed,
                  x.stride(0), 0 if residual is None else residual.stride(0), cols,
                  0 if residual is None else cols, heads, head_dim, eps),
            constexprs={"BLOCK_H": block_h, "BLOCK_D": block_d, "HAS_RESIDUAL": residual is not None},
            num_warps=min(16, max(1, block_h * block_d // 256)),
        )
    ]


def _fits(x, weight, head_dim) -> bool:
    return x.dim() == 2 and x.stride(1) == 1 and x.shape[1] % head_dim == 0 and weight.shape == (head_dim,) \
        and head_dim <= 32768


@OPS["rms_norm"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, weight, eps: _fits(x, weight, x.shape[-1]),
)
def rms_norm_triton(x, weight, eps):
    return _launch(x, None, weight, eps, x.shape[1], (Out(0), None))


@OPS["fused_add_rms_norm"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, residual, weight, eps: _fits(x, weight, x.shape[-1]) and residual.shape == x.shape
    and residual.stride(1) == 1,
)
def fused_add_rms_norm_triton(x, residual, weight, eps):
    return _launch(x, residual, weight, eps, x.shape[1], (Out(0), Out(1)))


@OPS["head_rms_norm"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, weight, eps, head_dim: _fits(x, weight, head_dim),
)
def head_rms_norm_triton(x, weight, eps, head_dim):
    return _launch(x, None, weight, eps, head_dim, (Out(0), None))
