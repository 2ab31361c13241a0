"""Matrix products: `linear` (x @ W^T + b) and `lm_head` (picked rows of x @ W^T, float32).

Two kernels serve both ops. `gemv_kernel` streams W once for a few rows (decode, memory-bound);
`matmul_kernel` is the tiled tensor-core GEMM (prefill, compute-bound), which on sm90 lowers to
wgmma when its tiles are large enough. `lm_head` gathers its rows of x through `rows_ptr`.
The kernels also take a prologue on the A operand (`a_tile`): RMS norm (the row scale applied
after the K loop) or silu(gate) * up, which `fused_linear.py` registers as fused ops.
N and K are constexprs (fixed per model); the row count M stays a runtime int so that one
compiled kernel serves every batch bucket.
"""

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.activation import ACTIVATIONS, gate_act
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.targets import GPU_TARGETS

GEMV_MAX_ROWS = 16


def min_programs() -> int:
    """gemv grids aim for two programs per multiprocessor of the target."""
    return 2 * current_launch_context().num_sms


@triton.jit
def grouped_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """This program's (row tile, column tile), in grouped order: GROUP_M row tiles share each column
    tile of W while it sits in L2."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    first_m = pid // (GROUP_M * num_pid_n) * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    return first_m + (pid % (GROUP_M * num_pid_n)) % group_m, (pid % (GROUP_M * num_pid_n)) // group_m


@triton.jit
def _load(ptrs, mask):
    if mask is None:
        tile = tl.load(ptrs)
    else:
        tile = tl.load(ptrs, mask=mask, other=0.0)
    return tile


@triton.jit
def a_tile(x_ptr, residual_ptr, norm_w_ptr, offs, offs_k, mask, k_mask,
           K: tl.constexpr, GATED: tl.constexpr, NORM: tl.constexpr, HAS_RESIDUAL: tl.constexpr):
    """The A operand at `offs` of x (columns offs_k), after its prologue; and, for NORM, the summed rows."""
    x = _load(x_ptr + offs, mask)
    summed = x
    if GATED:
        # x = [gate | up]: act (GATED - 1: an ACT of activation.py) in float32 rounded to x's dtype,
        # times up rounded again, as torch does
        up = _load(x_ptr + offs + K, mask)
        act = gate_act(x.to(tl.float32), GATED - 1).to(x.dtype)
        x = (act.to(tl.float32) * up.to(tl.float32)).to(summed.dtype)
    if NORM:
        # rms_norm's per-row scale factors out of the product (applied after the K loop); the weight does not
        if HAS_RESIDUAL:
            summed = (x.to(tl.float32) + _load(residual_ptr + offs, mask).to(tl.float32)).to(x.dtype)
        norm_w = _load(norm_w_ptr + offs_k, k_mask).to(tl.float32)
        x = (summed.to(tl.float32) * norm_w[None, :]).to(summed.dtype)
    return x, summed


@triton.jit
def gemv_kernel(
    # pointers
    x_ptr,  # [*, K] ([*, 2K] gate | up when GATED)
    residual_ptr,  # [M, K] added to x (NORM with HAS_RESIDUAL) or null
    norm_w_ptr,  # [K] RMS-norm weight (NORM) or null
    w_ptr,  # [N, K]
    bias_ptr,  # [N] or null
    rows_ptr,  # [M] int32 rows of x (GATHER) or null
    out_ptr,  # [M, N]
    summed_ptr,  # [M, K] x (+ residual) (NORM) or null
    # sizes
    M,
    eps,  # RMS-norm epsilon (NORM) or null
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    GATED: tl.constexpr,  # 0, or 1 + ACT: A = act(x[:, :K]) * x[:, K:]
    NORM: tl.constexpr,  # A = rms_norm(x (+ residual)); every program reads whole rows (no split-K)
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,  # 1: one row, FMA reduction; else >= 16: tl.dot on padded rows
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    X_STRIDE: tl.constexpr = 2 * K if GATED else K
    first = tl.program_id(0) == 0  # the program that also stores summed rows (NORM)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    if GATHER:
        rows = tl.load(rows_ptr + offs_m, mask=m_ok, other=0)
    else:
        rows = offs_m
    if BLOCK_M == 1:
        # [BLOCK_N, BLOCK_K] products, reduced over K once at the end
        w_offs = tl.where(n_ok, offs_n, 0)[:, None] * K + offs_k[None, :]
        x_offs = rows[:, None] * X_STRIDE + offs_k[None, :]
        acc2 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        ss2 = tl.zeros((1, BLOCK_K), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            if K % BLOCK_K == 0:
                mask, k_mask = None, None
            else:
                mask, k_mask = offs_k[None, :] < K - k, offs_k < K - k
            w = _load(w_ptr + w_offs, mask)
            x, summed = a_tile(x_ptr, residual_ptr, norm_w_ptr, x_offs, k + offs_k, mask, k_mask,
                               K, GATED, NORM, HAS_RESIDUAL)
            acc2 += w.to(tl.float32) * x.to(tl.float32)
            if NORM:
                ss2 += summed.to(tl.float32) * summed.to(tl.float32)
                if first:
                    tl.store(summed_ptr + offs_m[:, None] * K + k + offs_k[None, :], summed, mask=mask)
            w_offs += BLOCK_K
            x_offs += BLOCK_K
        acc = tl.sum(acc2, axis=1)[None, :]
        ss = tl.sum(ss2, axis=1)
    else:
        # [BLOCK_M, BLOCK_K] @ [BLOCK_K, BLOCK_N] on the tensor cores, rows past M read as zeros
        w_offs = offs_k[:, None] + tl.where(n_ok, offs_n, 0)[None, :] * K
        x_offs = tl.where(m_ok, rows, 0)[:, None] * X_STRIDE + offs_k[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        ss = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            if K % BLOCK_K == 0:
                w = tl.load(w_ptr + w_offs)
                mask, k_mask = m_ok[:, None], None
            else:
                w = tl.load(w_ptr + w_offs, mask=offs_k[:, None] < K - k, other=0.0)
                mask, k_mask = m_ok[:, None] & (offs_k[None, :] < K - k), offs_k < K - k
            x, summed = a_tile(x_ptr, residual_ptr, norm_w_ptr, x_offs, k + offs_k, mask, k_mask,
                               K, GATED, NORM, HAS_RESIDUAL)
            if x_ptr.dtype.element_ty == tl.float32:
                acc = tl.dot(x, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(x, w, acc)
            if NORM:
                ss += tl.sum(summed.to(tl.float32) * summed.to(tl.float32), axis=1)
                if first:
                    tl.store(summed_ptr + offs_m[:, None] * K + k + offs_k[None, :], summed, mask=mask)
            w_offs += BLOCK_K
            x_offs += BLOCK_K
    if NORM:
        acc *= tl.rsqrt(ss / K + eps)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def matmul_kernel(
    # pointers
    x_ptr,  # [*, K] ([*, 2K] gate | up when GATED)
    residual_ptr,  # [M, K] added to x (NORM with HAS_RESIDUAL) or null
    norm_w_ptr,  # [K] RMS-norm weight (NORM) or null
    w_ptr,  # [N, K]
    bias_ptr,  # [N] or null
    rows_ptr,  # [M] int32 rows of x (GATHER) or null
    out_ptr,  # [M, N]
    summed_ptr,  # [M, K] x (+ residual) (NORM) or null
    # sizes
    M,
    eps,  # RMS-norm epsilon (NORM) or null
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    GATED: tl.constexpr,  # 0, or 1 + ACT: A = act(x[:, :K]) * x[:, K:]
    NORM: tl.constexpr,  # A = rms_norm(x (+ residual)); every program reads whole rows (no split-K)
    HAS_RESIDUAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    X_STRIDE: tl.constexpr = 2 * K if GATED else K
    pid_m, pid_n = grouped_tile(M, N, BLOCK_M, BLOCK_N, GROUP_M)

    # rows and columns wrap around (% M, % N) so the K loop needs no row/column masks
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if GATHER:
        rows = tl.load(rows_ptr + offs_m % M)
    else:
        rows = offs_m % M
    x_offs = rows[:, None] * X_STRIDE + offs_k[None, :]
    w_offs = offs_k[:, None] + (offs_n % N)[None, :] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    ss = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if K % BLOCK_K == 0:
            w = tl.load(w_ptr + w_offs)
            mask, k_mask = None, None
        else:
            w = tl.load(w_ptr + w_offs, mask=offs_k[:, None] < K - k, other=0.0)
            mask, k_mask = offs_k[None, :] < K - k, offs_k < K - k
        x, summed = a_tile(x_ptr, residual_ptr, norm_w_ptr, x_offs, k + offs_k, mask, k_mask,
                           K, GATED, NORM, HAS_RESIDUAL)
        if x_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(x, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w, acc)
        if NORM:
            ss += tl.sum(summed.to(tl.float32) * summed.to(tl.float32), axis=1)
            if pid_n == 0:
                row_ok = (offs_m < M)[:, None]
                tl.store(summed_ptr + offs_m[:, None] * K + k + offs_k[None, :], summed,
                         mask=row_ok if mask is None else row_ok & mask)
        x_offs += BLOCK_K
        w_offs += BLOCK_K
    if NORM:
        acc *= tl.rsqrt(ss / K + eps)[:, None]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


@dataclass(frozen=True)
class Prologue:
    """What the A operand goes through on its way in: the kernels' prologue arguments and flags.

    Both kernels give each program whole rows of x (the K loop is never split across programs),
    which the norm needs: its per-row statistic is a sum over all of K.
    """

    gated: int = 0  # 0: none; 1 + an ACT of kernels/activation.py: A = act(gate) * up
    norm_weight: object = None  # a tensor: NORM
    residual: object = None
    eps: float | None = None

    @property
    def summed(self):
        return Out(1) if self.norm_weight is not None else None

    @property
    def constexprs(self) -> dict:
        norm = self.norm_weight is not None
        return dict(GATED=self.gated, NORM=norm, HAS_RESIDUAL=norm and self.residual is not None)


PLAIN = Prologue()


def gated(op: str) -> Prologue:
    """The prologue of a gated op (silu_and_mul, gelu_tanh_and_mul) folded into the linear."""
    return Prologue(gated=1 + ACTIVATIONS[op])


# Launch rules. gemv, one row: thin slices of W (2 rows; 4 when the gated prologue reads x twice)
# and long K steps (up to 2048), so that every multiprocessor holds many programs each with 8 KB
# of W in flight; this beat wider slices at every Qwen3-0.6B and Llama-3.1-8B shape on an H200
# (`kernels_bench.py --sweep`, against the rule before it: 32.6 against 39.9 us for 4096 x 14336,
# 4.2 against 5.2 us for 4096 x 1024). Several rows (tl.dot path): BLOCK_N the largest that still gives min_programs()
# programs, 4 KB of W per pipeline stage.
def _gemv(x, weight, bias, rows, m, pro=PLAIN):
    n, k = weight.shape
    kmax = max(16, triton.next_power_of_2(k))
    if m == 1:
        block_m, stages = 1, 2
        block_n = 4 if pro.gated else 2
        block_k = min(2048, kmax)
        warps = 8 if block_k == 2048 and not pro.gated else 4
    else:
        block_m, sizes, warps, stages = 16, (64, 32, 16), 4, 4
        block_n = next((b for b in sizes if triton.cdiv(n, b) >= min_programs()), sizes[-1])
        block_n = min(block_n, max(sizes[-1], triton.next_power_of_2(n)))
        block_k = max(16, min(4096 // block_n, kmax))
    while block_k > 64 and k % block_k and k % 64 == 0:  # a BLOCK_K that divides K: no masks
        block_k //= 2
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GATHER=rows is not None, **pro.constexprs,
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    args = (x, pro.residual, pro.norm_weight, weight, bias, rows, Out(0), pro.summed, m, pro.eps)
    return [Launch(gemv_kernel, (triton.cdiv(n, block_n),), args, meta, num_warps=warps, num_stages=stages)]


# gemm: the first tile shape that gives every multiprocessor a program, else the smallest.
# Generic shapes fit 64 KB of shared memory (sm89, gfx942); the sm90 shapes use wgmma.
GEMM_CONFIGS = ((128, 128, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4), (32, 64, 32, 4, 4))
WGMMA_CONFIGS = ((128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4))


def _gemm(x, weight, bias, rows, m, configs, pro=PLAIN):
    n, k = weight.shape
    fits = [c for c in configs if c[0] <= max(32, triton.next_power_of_2(m))] or [configs[-1]]
    bm, bn, bk, warps, stages = next((c for c in fits if triton.cdiv(m, c[0]) * triton.cdiv(n, c[1]) >= current_launch_context().num_sms), fits[-1])
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GATHER=rows is not None, **pro.constexprs,
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    args = (x, pro.residual, pro.norm_weight, weight, bias, rows, Out(0), pro.summed, m, pro.eps)
    return [Launch(matmul_kernel, grid, args, meta, num_warps=warps, num_stages=stages)]


def _wgmma_ok(x, weight, m):
    n, k = weight.shape
    return m >= 64 and n % 16 == 0 and k % 16 == 0 and x.dtype == weight.dtype and x.dtype in (torch.bfloat16, torch.float16)


@OPS["linear"].register_impl(
    "triton_gemv", targets=GPU_TARGETS, supports_args=lambda x, weight, bias: x.shape[0] <= GEMV_MAX_ROWS, launches=True
)
def linear_gemv(x, weight, bias):
    return _gemv(x, weight, bias, None, x.shape[0])


@OPS["linear"].register_impl("triton_gemm", targets=GPU_TARGETS, launches=True)
def linear_gemm(x, weight, bias):
    return _gemm(x, weight, bias, None, x.shape[0], GEMM_CONFIGS)


@OPS["linear"].register_impl(
    "triton_wgmma", targets=("sm90",), supports_args=lambda x, weight, bias: _wgmma_ok(x, weight, x.shape[0]), launches=True
)
def linear_wgmma(x, weight, bias):
    return _gemm(x, weight, bias, None, x.shape[0], WGMMA_CONFIGS)


@OPS["lm_head"].register_impl(
    "triton_gemv",
    targets=GPU_TARGETS,
    supports_args=lambda x, weight, logits_indices: logits_indices.shape[0] <= GEMV_MAX_ROWS,
    launches=True,
)
def lm_head_gemv(x, weight, logits_indices):
    return _gemv(x, weight, None, logits_indices, logits_indices.shape[0])


@OPS["lm_head"].register_impl("triton_gemm", targets=GPU_TARGETS, launches=True)
def lm_head_gemm(x, weight, logits_indices):
    return _gemm(x, weight, None, logits_indices, logits_indices.shape[0], GEMM_CONFIGS)


@OPS["lm_head"].register_impl(
    "triton_wgmma",
    targets=("sm90",),
    supports_args=lambda x, weight, logits_indices: _wgmma_ok(x, weight, logits_indices.shape[0]),
    launches=True,
)
def lm_head_wgmma(x, weight, logits_indices):
    return _gemm(x, weight, None, logits_indices, logits_indices.shape[0], WGMMA_CONFIGS)
