"""The FP8 linears at decode: one row streams the e4m3 weight once, half the bytes of a 16-bit one.

The quantize launch (`fp8_linear.py`) comes first; then `fp8_gemv_kernel` serves a single row with
FMA reductions in float32 (the weight widened in registers, so it is the same on every target),
and 2 to GEMV_MAX_ROWS rows use the FP8 matmul with 16-row tiles and thin column slices.
Quantizing inside the GEMV instead (every program recomputing the row's statistics) measured
slower on an H200: 52 us against 37 us for Llama-3.1-8B's gate_up_proj.
"""

import torch
import triton
import triton.language as tl

from llmc.kernels.fp8_linear import FP8_TARGETS, e4m3_to_float, matmul_launch, quantized, register
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.targets import GPU_TARGETS

GEMV_MAX_ROWS = 16
GEMV_CONFIGS = ((16, 64, 128, 4, 4), (16, 32, 128, 4, 4), (16, 16, 128, 4, 4))


@triton.jit
def fp8_gemv_kernel(
    # pointers
    a_ptr,  # [1, K] e4m3 activation (bfloat16 values on the weight-only path)
    a_scale_ptr,  # [1, KG] float32
    w_ptr,  # [N, K] e4m3 weight (its bytes as uint8 on the weight-only path)
    w_scale_ptr,  # [N, KG] float32
    bias_ptr,  # [N] or null
    out_ptr,  # [1, N]
    # sizes
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GROUP: tl.constexpr,  # 0: KG = 1; else BLOCK_K divides GROUP
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    KG: tl.constexpr = (K + GROUP - 1) // GROUP if GROUP else 1
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    cols = tl.where(n_ok, offs_n, 0)
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_N,), dtype=tl.float32)
    acc2 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k
        w = tl.load(w_ptr + cols[:, None] * K + k + offs_k[None, :], mask=k_ok[None, :], other=0.0)
        if w_ptr.dtype.element_ty == tl.uint8:
            w = e4m3_to_float(w)
        w = w.to(tl.float32)
        a = tl.load(a_ptr + k + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        if GROUP != 0:
            part = tl.sum(w * a[None, :], axis=1)
            acc += part * tl.load(a_scale_ptr + k // GROUP) * tl.load(w_scale_ptr + cols * KG + k // GROUP)
        else:
            acc2 += w * a[None, :]
    if GROUP == 0:
        acc = tl.sum(acc2, axis=1) * tl.load(a_scale_ptr) * tl.load(w_scale_ptr + cols)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols).to(tl.float32)
    tl.store(out_ptr + offs_n, acc.to(out_ptr.dtype.element_ty), mask=n_ok)


def _gemv_launch(q, scales, weight, weight_scale, bias, group, fp8):
    # BLOCK_N: the largest that still gives two programs per multiprocessor; an 8 KB weight tile.
    # (Tried: the 16-bit gemv's thin slices, 4 rows by 2048 columns. On an H200 Llama-3.1-8B's FP8
    # down_proj took 1020 against 917 us per decode step, and the whole graph 3.47 against 3.38 ms.)
    n, k = weight.shape
    sizes = (64, 32, 16, 8)
    block_n = next((b for b in sizes if triton.cdiv(n, b) >= 2 * current_launch_context().num_sms), sizes[-1])
    block_k = min(group, 8192 // block_n) if group else max(16, min(8192 // block_n, triton.next_power_of_2(k)))
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GROUP=group, BLOCK_N=block_n, BLOCK_K=block_k)
    w = weight if fp8 else weight.view(torch.uint8)
    return Launch(fp8_gemv_kernel, (triton.cdiv(n, block_n),), (q, scales, w, weight_scale, bias, Out(0)), meta,
                  num_warps=8 if block_n * block_k >= 4096 else 4, num_stages=3)


def _gemv(fp8: bool):
    def matmul(q, scales, weight, weight_scale, bias, group):
        if q.shape[0] == 1:
            return [_gemv_launch(q, scales, weight, weight_scale, bias, group, fp8)]
        return [matmul_launch(q, scales, weight, weight_scale, bias, group, fp8, GEMV_CONFIGS)]

    return quantized(matmul, fp8)


register("triton_fp8_gemv", FP8_TARGETS, _gemv(True), rows_ok=lambda m: m <= GEMV_MAX_ROWS)
register("triton_w8_gemv", GPU_TARGETS, _gemv(False), rows_ok=lambda m: m <= GEMV_MAX_ROWS)
