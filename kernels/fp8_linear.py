"""FP8 linears (`fp8_linear`, `fp8_norm_linear`, `fp8_silu_mul_linear`): quantize, then multiply.

`fp8_quant_kernel` makes the e4m3 activation and its scales (per row, or per 1 x GROUP group),
with the RMS norm or silu(gate) * up as its prologue: the norm's output feeds the quantizer
without a round trip through memory. `fp8_matmul_kernel` multiplies the e4m3 activation by the
e4m3 weight, applying both scales to each group's partial product in float32 (each group's
product starts from zero, so tensor-core accumulation never spans more than one group or
BLOCK_K). FP8_DOT: `tl.dot` of e4m3 operands (sm89/sm90 FP8 tensor cores). Otherwise the
weight-only path, which uses no FP8 type (Triton has none on sm80): the quantizer rounds to the
e4m3 grid in float32 and stores bfloat16 (every e4m3 value is one), the weight's bytes are read
as uint8 and decoded in registers, and the product is a bfloat16 `tl.dot` (sm80, gfx942).
The decode GEMV is `fp8_gemv.py`.
"""

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.linear import grouped_tile
from llmc.kernels.targets import GPU_TARGETS

FP8_TARGETS = ("sm89", "sm90")  # e4m3 tensor cores that Triton's tl.dot reaches
FP8_MAX = tl.constexpr(448.0)
MIN_SCALE = tl.constexpr(1e-12)


@triton.jit
def round_e4m3(v):
    """v (float32, within +-448) rounded to nearest even on the e4m3 grid: 3 mantissa bits, subnormals below 2^-6."""
    exponent = tl.maximum(((v.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127, -6)
    ulp = ((exponent + 124) << 23).to(tl.float32, bitcast=True)  # 2^(exponent - 3)
    return ((v / ulp + 12582912.0) - 12582912.0) * ulp  # + 1.5 * 2^23: float32 addition rounds to an integer


@triton.jit
def e4m3_to_float(b):
    """e4m3 bytes (uint8; never NaN: ingest refuses NaN weights) -> float32."""
    b = b.to(tl.int32)
    e, m = (b >> 3) & 0xF, b & 7
    normal = (((e + 120) << 23) | (m << 20)).to(tl.float32, bitcast=True)
    value = tl.where(e == 0, m.to(tl.float32) * 0.001953125, normal)  # subnormal: m * 2^-9
    return tl.where((b & 0x80) != 0, -value, value)


@triton.jit
def _prologue(x_ptr, residual_ptr, norm_w_ptr, row, offs, mask, rstd,
              K: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """Columns `offs` of the quantizer's input row, in x's dtype, rounded as the ops' natives round."""
    X_STRIDE: tl.constexpr = 2 * K if GATED else K
    x = tl.load(x_ptr + row * X_STRIDE + offs, mask=mask, other=0.0)
    if GATED:
        up = tl.load(x_ptr + row * X_STRIDE + K + offs, mask=mask, other=0.0)
        g = x.to(tl.float32)
        x = ((g / (1.0 + tl.exp(-g))).to(x.dtype).to(tl.float32) * up.to(tl.float32)).to(x.dtype)
    if NORM:
        if HAS_RESIDUAL:
            x = (x.to(tl.float32) + tl.load(residual_ptr + row * K + offs, mask=mask, other=0.0).to(tl.float32)).to(x.dtype)
        w = tl.load(norm_w_ptr + offs, mask=mask, other=0.0)
        x = (w.to(tl.float32) * (x.to(tl.float32) * rstd).to(x.dtype).to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def quantize_e4m3(v, scale, FP8: tl.constexpr):
    """v / scale saturated to +-448 and rounded to e4m3: an FP8 value, or (not FP8) the same value in float32."""
    q = tl.clamp(v / scale, -FP8_MAX, FP8_MAX)
    if FP8:
        q = q.to(tl.float8e4nv)
    else:
        q = round_e4m3(q)
    return q


@triton.jit
def row_stats(x_ptr, residual_ptr, norm_w_ptr, summed_ptr, row, eps,
              K: tl.constexpr, GROUP: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr,
              HAS_RESIDUAL: tl.constexpr, BLOCK_K: tl.constexpr):
    """(the norm's 1 / rms, the row's scale for GROUP 0) of the quantizer's input row; the summed row
    x (+ residual) is written to summed_ptr (NORM)."""
    offs = tl.arange(0, BLOCK_K)
    rstd = 1.0
    if NORM:
        ss = tl.zeros((BLOCK_K,), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            mask = offs < K - k
            s = tl.load(x_ptr + row * K + k + offs, mask=mask, other=0.0)
            if HAS_RESIDUAL:
                s = (s.to(tl.float32) + tl.load(residual_ptr + row * K + k + offs, mask=mask, other=0.0).to(tl.float32)).to(s.dtype)
            tl.store(summed_ptr + row * K + k + offs, s, mask=mask)
            ss += s.to(tl.float32) * s.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(ss, axis=0) / K + eps)
    amax = tl.zeros((BLOCK_K,), dtype=tl.float32)
    if GROUP == 0:
        for k in range(0, K, BLOCK_K):
            v = _prologue(x_ptr, residual_ptr, norm_w_ptr, row, k + offs, offs < K - k, rstd, K, GATED, NORM, HAS_RESIDUAL)
            amax = tl.maximum(amax, tl.abs(v.to(tl.float32)))
    return rstd, tl.maximum(tl.max(amax, axis=0) / FP8_MAX, MIN_SCALE)


@triton.jit
def fp8_quant_kernel(
    # pointers
    x_ptr,  # [M, K] ([M, 2K] gate | up when GATED)
    residual_ptr,  # [M, K] added to x (NORM with HAS_RESIDUAL) or null
    norm_w_ptr,  # [K] RMS-norm weight (NORM) or null
    summed_ptr,  # [M, K] x (+ residual) (NORM) or null
    q_ptr,  # [M, K] e4m3, or bfloat16 holding e4m3 values (the weight-only path)
    scale_ptr,  # [M, ceil(K / GROUP)] float32 ([M, 1] for GROUP 0)
    # sizes
    eps,
    K: tl.constexpr,
    # meta-parameters
    GROUP: tl.constexpr,  # 0: one scale per row; else per GROUP columns (BLOCK_K == GROUP)
    GATED: tl.constexpr,
    NORM: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0)
    KG: tl.constexpr = (K + GROUP - 1) // GROUP if GROUP else 1
    offs = tl.arange(0, BLOCK_K)
    rstd, row_scale = row_stats(x_ptr, residual_ptr, norm_w_ptr, summed_ptr, row, eps, K, GROUP, GATED, NORM, HAS_RESIDUAL,
                                BLOCK_K)
    for k in range(0, K, BLOCK_K):
        mask = offs < K - k
        v = _prologue(x_ptr, residual_ptr, norm_w_ptr, row, k + offs, mask, rstd, K, GATED, NORM, HAS_RESIDUAL).to(tl.float32)
        scale = row_scale
        if GROUP != 0:
            scale = tl.maximum(tl.max(tl.abs(v), axis=0) / FP8_MAX, MIN_SCALE)
            tl.store(scale_ptr + row * KG + k // GROUP, scale)
        q = quantize_e4m3(v, scale, q_ptr.dtype.element_ty != tl.bfloat16)
        tl.store(q_ptr + row * K + k + offs, q.to(q_ptr.dtype.element_ty), mask=mask)
    if GROUP == 0:
        tl.store(scale_ptr + row, row_scale)


@triton.jit
def fp8_matmul_kernel(
    # pointers
    a_ptr,  # [M, K] e4m3 activation (bfloat16 values on the weight-only path)
    a_scale_ptr,  # [M, KG] float32
    w_ptr,  # [N, K] e4m3 weight (its bytes as uint8 on the weight-only path)
    w_scale_ptr,  # [N, KG] float32
    bias_ptr,  # [N] or null
    out_ptr,  # [M, N]
    # sizes
    M,
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GROUP: tl.constexpr,  # 0: KG = 1 (scales applied once, after the K loop); else BLOCK_K divides GROUP
    FP8_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    KG: tl.constexpr = (K + GROUP - 1) // GROUP if GROUP else 1
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)
    # rows and columns wrap around (% M, % N): no row/column masks in the K loop
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rows, cols = offs_m % M, offs_n % N
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k
        a = tl.load(a_ptr + rows[:, None] * K + k + offs_k[None, :], mask=k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + cols[None, :] * K + k + offs_k[:, None], mask=k_ok[:, None], other=0.0)
        if FP8_DOT:
            part = tl.dot(a, w)
        else:
            part = tl.dot(a, e4m3_to_float(w).to(tl.bfloat16))
        if GROUP != 0:
            sa = tl.load(a_scale_ptr + rows * KG + k // GROUP)
            sw = tl.load(w_scale_ptr + cols * KG + k // GROUP)
            part = part * sa[:, None] * sw[None, :]
        acc += part
    if GROUP == 0:
        acc = acc * tl.load(a_scale_ptr + rows)[:, None] * tl.load(w_scale_ptr + cols)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask)


# -- launch rules -------------------------------------------------------------------------------


def quantize_launches(x, k: int, group: int, fp8: bool, *, gated=False, residual=None, norm_weight=None, eps=None):
    """Launches that quantize the prologue's output into scratch (e4m3 [M, K], or bfloat16 without `fp8`;
    scales [M, KG]); with a norm, the summed rows go to Out(1)."""
    m = x.shape[0]
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn if fp8 else torch.bfloat16, device=x.device)
    scales = torch.empty((m, -(-k // group) if group else 1), dtype=torch.float32, device=x.device)
    norm = norm_weight is not None
    block_k = group or min(1024, triton.next_power_of_2(k))
    meta = dict(K=k, GROUP=group, GATED=gated, NORM=norm, HAS_RESIDUAL=norm and residual is not None, BLOCK_K=block_k)
    args = (x, residual, norm_weight, Out(1) if norm else None, q, scales, eps)
    return q, scales, [Launch(fp8_quant_kernel, (m,), args, meta, num_warps=4 if block_k >= 512 else 1)]


# (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages): the first that gives every multiprocessor a program
GEMM_CONFIGS = ((128, 128, 128, 8, 3), (64, 128, 128, 4, 3), (64, 64, 128, 4, 3), (32, 64, 128, 4, 3), (16, 32, 128, 4, 3))


def _shared_bytes(config, a_bytes: int) -> int:
    bm, bn, bk, _, stages = config
    return (bm * bk * a_bytes + bk * bn) * stages  # A and W tiles per pipeline stage


def matmul_launch(q, scales, weight, weight_scale, bias, group: int, fp8_dot: bool, configs=GEMM_CONFIGS):
    m, (n, k) = q.shape[0], weight.shape
    smem = current_launch_context().shared_mem_per_block
    configs = [c for c in configs if _shared_bytes(c, q.element_size()) <= smem] or [configs[-1]]
    fits = [c for c in configs if c[0] <= max(16, triton.next_power_of_2(m))] or [configs[-1]]
    bm, bn, bk, warps, stages = next((c for c in fits if triton.cdiv(m, c[0]) * triton.cdiv(n, c[1])
                                      >= current_launch_context().num_sms), fits[-1])
    bk = min(bk, group) if group else min(bk, max(16, triton.next_power_of_2(k)))
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GROUP=group, FP8_DOT=fp8_dot,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    w = weight if fp8_dot else weight.view(torch.uint8)
    return Launch(fp8_matmul_kernel, grid, (q, scales, w, weight_scale, bias, Out(0), m), meta,
                  num_warps=warps, num_stages=stages)


def supported(x_cols: int, weight, weight_scale, group: int) -> bool:
    """Shapes the kernels take: a power-of-two group of at least 16 (a tl.dot's K), scales as declared."""
    n, k = weight.shape
    groups = -(-k // group) if group else 1
    return (weight.dtype == torch.float8_e4m3fn and x_cols == k and tuple(weight_scale.shape) == (n, groups)
            and (group == 0 or (group >= 16 and group & (group - 1) == 0)))


def quantized(matmul, fp8: bool):
    """Launches of an FP8 linear: quantize (into scratch), then `matmul(q, scales, weight, weight_scale, bias, group)`."""

    def launches(x, weight, weight_scale, bias, group, **prologue):
        q, scales, first = quantize_launches(x, weight.shape[1], group, fp8, **prologue)
        return first + matmul(q, scales, weight, weight_scale, bias, group)

    return launches


def register(provider: str, targets, launches, rows_ok=lambda m: True) -> None:
    """Register `provider` on the three FP8 linear ops: `launches(x, weight, weight_scale, bias, group, **prologue)`,
    the prologue being residual, norm_weight and eps (a norm) or gated."""

    @OPS["fp8_linear"].register_impl(provider, targets=targets, launches=True,
                                     supports_args=lambda x, weight, weight_scale, bias, group_size: rows_ok(x.shape[0])
                                     and supported(x.shape[1], weight, weight_scale, group_size))
    def fp8_linear(x, weight, weight_scale, bias, group_size):
        return launches(x, weight, weight_scale, bias, group_size)

    @OPS["fp8_norm_linear"].register_impl(
        provider, targets=targets, launches=True,
        supports_args=lambda x, residual, norm_weight, eps, weight, weight_scale, bias, group_size: rows_ok(x.shape[0])
        and supported(x.shape[1], weight, weight_scale, group_size))
    def fp8_norm_linear(x, residual, norm_weight, eps, weight, weight_scale, bias, group_size):
        return launches(x, weight, weight_scale, bias, group_size, residual=residual, norm_weight=norm_weight, eps=eps)

    @OPS["fp8_silu_mul_linear"].register_impl(
        provider, targets=targets, launches=True,
        supports_args=lambda x, weight, weight_scale, bias, group_size: rows_ok(x.shape[0])
        and supported(x.shape[1] // 2, weight, weight_scale, group_size))
    def fp8_silu_mul_linear(x, weight, weight_scale, bias, group_size):
        return launches(x, weight, weight_scale, bias, group_size, gated=True)


def _gemm(fp8_dot: bool):
    def matmul(q, scales, weight, weight_scale, bias, group):
        return [matmul_launch(q, scales, weight, weight_scale, bias, group, fp8_dot)]

    return matmul


register("triton_fp8_gemm", FP8_TARGETS, quantized(_gemm(True), fp8=True))
register("triton_w8_gemm", GPU_TARGETS, quantized(_gemm(False), fp8=False))
