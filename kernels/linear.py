"""Matrix products: `linear` (x @ W^T + b) and `lm_head` (picked rows of x @ W^T, float32).

Two kernels serve both ops. `gemv_kernel` streams W once for a few rows (decode, memory-bound);
`matmul_kernel` is the tiled tensor-core GEMM (prefill, compute-bound), which on sm90 lowers to
wgmma when its tiles are large enough. `lm_head` gathers its rows of x through `rows_ptr`.
N and K are constexprs (fixed per model); the row count M stays a runtime int so that one
compiled kernel serves every batch bucket.
"""

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS

GEMV_MAX_ROWS = 16
NUM_SMS = 132  # multiprocessors of an H100 (an A100 has 108, an MI300X 304 CUs)
MIN_PROGRAMS = 2 * NUM_SMS


@triton.jit
def gemv_kernel(
    # pointers
    x_ptr,  # [*, K]
    w_ptr,  # [N, K]
    bias_ptr,  # [N] or null
    rows_ptr,  # [M] int32 rows of x (GATHER) or null
    out_ptr,  # [M, N]
    # sizes
    M,
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    BLOCK_M: tl.constexpr,  # 1: one row, FMA reduction; else >= 16: tl.dot on padded rows
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
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
        w_ptrs = w_ptr + tl.where(n_ok, offs_n, 0)[:, None] * K + offs_k[None, :]
        x_ptrs = x_ptr + rows * K + offs_k[None, :]
        acc2 = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            if K % BLOCK_K == 0:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs)
            else:
                k_ok = offs_k[None, :] < K - k
                w = tl.load(w_ptrs, mask=k_ok, other=0.0)
                x = tl.load(x_ptrs, mask=k_ok, other=0.0)
            acc2 += w.to(tl.float32) * x.to(tl.float32)
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
        acc = tl.sum(acc2, axis=1)[None, :]
    else:
        # [BLOCK_M, BLOCK_K] @ [BLOCK_K, BLOCK_N] on the tensor cores, rows past M read as zeros
        w_ptrs = w_ptr + offs_k[:, None] + tl.where(n_ok, offs_n, 0)[None, :] * K
        x_ptrs = x_ptr + tl.where(m_ok, rows, 0)[:, None] * K + offs_k[None, :]
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K, BLOCK_K):
            if K % BLOCK_K == 0:
                w = tl.load(w_ptrs)
                x = tl.load(x_ptrs, mask=m_ok[:, None], other=0.0)
            else:
                w = tl.load(w_ptrs, mask=offs_k[:, None] < K - k, other=0.0)
                x = tl.load(x_ptrs, mask=m_ok[:, None] & (offs_k[None, :] < K - k), other=0.0)
            if x_ptr.dtype.element_ty == tl.float32:
                acc = tl.dot(x, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(x, w, acc)
            w_ptrs += BLOCK_K
            x_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def matmul_kernel(
    # pointers
    x_ptr,  # [*, K]
    w_ptr,  # [N, K]
    bias_ptr,  # [N] or null
    rows_ptr,  # [M] int32 rows of x (GATHER) or null
    out_ptr,  # [M, N]
    # sizes
    M,
    N: tl.constexpr,
    K: tl.constexpr,
    # meta-parameters
    HAS_BIAS: tl.constexpr,
    GATHER: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    # grouped ordering: GROUP_M row tiles share each column tile of W while it sits in L2
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * num_pid_n)
    first_m = group * GROUP_M
    group_m = tl.minimum(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * num_pid_n)) % group_m
    pid_n = (pid % (GROUP_M * num_pid_n)) // group_m

    # rows and columns wrap around (% M, % N) so the K loop needs no row/column masks
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if GATHER:
        rows = tl.load(rows_ptr + offs_m % M)
    else:
        rows = offs_m % M
    x_ptrs = x_ptr + rows[:, None] * K + offs_k[None, :]
    w_ptrs = w_ptr + offs_k[:, None] + (offs_n % N)[None, :] * K
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        if K % BLOCK_K == 0:
            x = tl.load(x_ptrs)
            w = tl.load(w_ptrs)
        else:
            x = tl.load(x_ptrs, mask=offs_k[None, :] < K - k, other=0.0)
            w = tl.load(w_ptrs, mask=offs_k[:, None] < K - k, other=0.0)
        if x_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(x, w, acc, input_precision="ieee")
        else:
            acc = tl.dot(x, w, acc)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)[None, :]
    out_ptrs = out_ptr + offs_m[:, None] * N + offs_n[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


# Launch rules. gemv: BLOCK_N is the largest that still gives MIN_PROGRAMS programs (small
# N gets thin slices of W rather than split-K, which would need a scratch buffer), and a tile
# of W is 16 KB (one row) or 8 KB per pipeline stage (tl.dot path) whatever N.
def _gemv(x, weight, bias, rows, m):
    n, k = weight.shape
    kmax = max(16, triton.next_power_of_2(k))
    if m == 1:
        block_m, sizes, tile, warps, stages = 1, (64, 32, 16, 8, 4), 8192, 8, 3
    else:
        block_m, sizes, tile, warps, stages = 16, (64, 32, 16), 4096, 4, 4
    block_n = next((b for b in sizes if triton.cdiv(n, b) >= MIN_PROGRAMS), sizes[-1])
    block_n = min(block_n, max(sizes[-1], triton.next_power_of_2(n)))
    block_k = max(16, min(tile // block_n, kmax))
    while block_k > 64 and k % block_k and k % 64 == 0:  # a BLOCK_K that divides K: no masks
        block_k //= 2
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GATHER=rows is not None, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k)
    args = (x, weight, bias, rows, Out(0), m)
    return [Launch(gemv_kernel, (triton.cdiv(n, block_n),), args, meta, num_warps=warps, num_stages=stages)]


# gemm: the first tile shape that gives every multiprocessor a program, else the smallest.
# Generic shapes fit 64 KB of shared memory (sm89, gfx942); the sm90 shapes use wgmma.
GEMM_CONFIGS = ((128, 128, 32, 4, 4), (64, 128, 32, 4, 4), (64, 64, 32, 4, 4), (32, 64, 32, 4, 4))
WGMMA_CONFIGS = ((128, 256, 64, 8, 3), (128, 128, 64, 8, 4), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4))


def _gemm(x, weight, bias, rows, m, configs):
    n, k = weight.shape
    fits = [c for c in configs if c[0] <= max(32, triton.next_power_of_2(m))] or [configs[-1]]
    bm, bn, bk, warps, stages = next((c for c in fits if triton.cdiv(m, c[0]) * triton.cdiv(n, c[1]) >= NUM_SMS), fits[-1])
    meta = dict(N=n, K=k, HAS_BIAS=bias is not None, GATHER=rows is not None, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8)
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn),)
    return [Launch(matmul_kernel, grid, (x, weight, bias, rows, Out(0), m), meta, num_warps=warps, num_stages=stages)]


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
