"""`fused_moe`: every token's top-k experts' gated MLPs, summed by the router's weights.

Rows are the T * TOPK (token, choice) assignments, row r = t * TOPK + j. Two paths:
- grouped (prefill): `moe_align_kernel` sorts the rows by expert into segments padded to
  BLOCK_M; one grouped GEMM launch computes [gate | up] for every block of rows, each block
  against its expert's weights, SiLU-and-mul follows, and a second grouped GEMM launch the down
  projection, scaled by the routing weight;
- decode (few rows): the same two products as GEMVs, one program per (row, column block), each
  reading only the weights of the expert that row chose.
Either way `moe_sum_kernel` adds each token's TOPK rows in float32.
"""

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.activation import gated_launch
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS

DECODE_MAX_ROWS = 16  # T * TOPK up to which the GEMV path serves
BLOCK_M = 16


@triton.jit
def moe_align_kernel(
    # pointers
    ids_ptr,  # [NUMEL] int32 expert of each row
    sorted_ptr,  # [NUM_BLOCKS * BLOCK_M] int32 rows grouped by expert; NUMEL marks padding
    block_expert_ptr,  # [NUM_BLOCKS] int32 expert of each block; -1 past the last
    # sizes
    NUMEL: tl.constexpr,
    E: tl.constexpr,
    NUM_BLOCKS: tl.constexpr,
    # meta-parameters
    BLOCK_M: tl.constexpr,
    BLOCK_R: tl.constexpr,  # NUMEL padded to a power of two
):
    # one program: expert e's rows, in row order, fill blocks start_e ... of BLOCK_M slots
    offs = tl.arange(0, BLOCK_R)
    ids = tl.load(ids_ptr + offs, mask=offs < NUMEL, other=-1)
    start = tl.program_id(0) * 0
    for e in range(E):
        mine = ids == e
        count = tl.sum(mine.to(tl.int32), 0)
        slot = start + tl.cumsum(mine.to(tl.int32), 0) - 1
        tl.store(sorted_ptr + slot, offs.to(tl.int32), mask=mine)
        padded = (count + BLOCK_M - 1) // BLOCK_M * BLOCK_M
        pad = start + count + offs
        tl.store(sorted_ptr + pad, tl.full((BLOCK_R,), NUMEL, tl.int32), mask=pad < start + padded)
        blocks = start // BLOCK_M + offs
        tl.store(block_expert_ptr + blocks, tl.full((BLOCK_R,), e, tl.int32), mask=blocks < (start + padded) // BLOCK_M)
        start += padded
    rest = start // BLOCK_M + offs
    tl.store(block_expert_ptr + rest, tl.full((BLOCK_R,), -1, tl.int32), mask=rest < NUM_BLOCKS)


@triton.jit
def moe_gemm_kernel(
    # pointers
    a_ptr,  # [rows // A_DIV, K]: A row of assignment row r is r // A_DIV
    w_ptr,  # [E, N, K]
    out_ptr,  # [NUMEL, N]
    sorted_ptr,  # [NUM_BLOCKS * BLOCK_M] int32
    block_expert_ptr,  # [NUM_BLOCKS] int32
    scale_ptr,  # [NUMEL] float32 routing weights (SCALE) or null
    # sizes
    NUMEL: tl.constexpr,
    N: tl.constexpr,
    K: tl.constexpr,
    A_DIV: tl.constexpr,
    # meta-parameters
    SCALE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # program (b, n): block b of sorted rows times columns n*BLOCK_N ... of its expert's W^T
    b = tl.program_id(0)
    expert = tl.load(block_expert_ptr + b)
    if expert >= 0:
        rows = tl.load(sorted_ptr + b * BLOCK_M + tl.arange(0, BLOCK_M))
        row_ok = rows < NUMEL
        a_rows = (tl.where(row_ok, rows, 0) // A_DIV).to(tl.int64)
        offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        n_ok = offs_n < N
        w_base = w_ptr + expert.to(tl.int64) * N * K
        acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K
            a = tl.load(a_ptr + a_rows[:, None] * K + offs_k[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(w_base + offs_n[None, :] * K + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
            if a_ptr.dtype.element_ty == tl.float32:
                acc = tl.dot(a, w, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, w, acc)
        y = acc.to(out_ptr.dtype.element_ty)
        if SCALE:  # the product rounded, times the weight rounded, rounded again (as the op does)
            s = tl.load(scale_ptr + rows, mask=row_ok, other=0.0).to(out_ptr.dtype.element_ty)
            y = (y.to(tl.float32) * s.to(tl.float32)[:, None]).to(out_ptr.dtype.element_ty)
        out = out_ptr + rows.to(tl.int64)[:, None] * N + offs_n[None, :]
        tl.store(out, y, mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def moe_gemv_kernel(
    # pointers
    a_ptr,  # [rows // A_DIV, K]
    w_ptr,  # [E, N, K]
    out_ptr,  # [NUMEL, N]
    ids_ptr,  # [NUMEL] int32 expert of each row
    scale_ptr,  # [NUMEL] float32 (SCALE) or null
    # sizes
    N: tl.constexpr,
    K: tl.constexpr,
    A_DIV: tl.constexpr,
    # meta-parameters
    SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # program (r, n): row r's columns n*BLOCK_N ..., reading only its expert's weights
    r = tl.program_id(0)
    expert = tl.load(ids_ptr + r).to(tl.int64)
    a_row = a_ptr + (r // A_DIV).to(tl.int64) * K
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    acc = tl.zeros((BLOCK_N,), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        a = tl.load(a_row + offs_k, mask=k_ok, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + expert * N * K + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.sum(w.to(tl.float32) * a[None, :], 1)
    y = acc.to(out_ptr.dtype.element_ty)
    if SCALE:
        s = tl.load(scale_ptr + r).to(out_ptr.dtype.element_ty)
        y = (y.to(tl.float32) * s.to(tl.float32)).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + r.to(tl.int64) * N + offs_n, y, mask=n_ok)


@triton.jit
def moe_sum_kernel(
    # pointers
    rows_ptr,  # [T * TOPK, H]
    out_ptr,  # [T, H]
    # sizes
    H: tl.constexpr,
    TOPK: tl.constexpr,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): out[t, c*BLOCK ...] = sum over j of rows[t * TOPK + j], in float32
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = cols < H
    acc = tl.zeros((BLOCK,), tl.float32)
    for j in tl.static_range(TOPK):
        acc += tl.load(rows_ptr + (t * TOPK + j) * H + cols, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + t * H + cols, acc.to(out_ptr.dtype.element_ty), mask=ok)


def _scratch(shape, dtype, like):
    """A buffer the planner places in the arena for the node's lifetime (a test allocates it for real)."""
    return torch.empty(shape, dtype=dtype, device=like.device)


def _sum(rows, t, h, topk):
    block = min(triton.next_power_of_2(h), 1024)
    return Launch(moe_sum_kernel, (t, triton.cdiv(h, block)), (rows, Out(0)), dict(H=h, TOPK=topk, BLOCK=block), num_warps=4)


def _ok(x, w13, w2, topk_weights, topk_ids):
    e, two_i, h = w13.shape
    return (x.dim() == 2 and x.shape[1] == h and w2.shape == (e, h, two_i // 2) and topk_ids.shape == topk_weights.shape
            and topk_ids.shape[0] == x.shape[0] and all(t.is_contiguous() for t in (x, w13, w2, topk_weights, topk_ids)))


# Launch rule, decode: one program per (row, 4 columns), up to 2048 of K a step: the dense gemv's
# measured rule (thin slices of W, long steps), the silu between the two products its own launch.
@OPS["fused_moe"].register_impl(
    "triton_decode", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, w13, w2, topk_weights, topk_ids: _ok(x, w13, w2, topk_weights, topk_ids)
    and topk_ids.numel() <= DECODE_MAX_ROWS,
)
def fused_moe_decode(x, w13, w2, topk_weights, topk_ids):
    (t, topk), (_, two_i, h) = topk_ids.shape, w13.shape
    rows, inter = t * topk, two_i // 2
    gate_up, act, down = (_scratch((rows, n), x.dtype, x) for n in (two_i, inter, h))

    def gemv(a, w, out, n, k, a_div, scale):
        block_k = min(2048, triton.next_power_of_2(k))
        meta = dict(N=n, K=k, A_DIV=a_div, SCALE=scale is not None, BLOCK_N=4, BLOCK_K=block_k)
        return Launch(moe_gemv_kernel, (rows, triton.cdiv(n, 4)), (a, w, out, topk_ids, scale), meta,
                      num_warps=8 if block_k == 2048 else 4)

    return [gemv(x, w13, gate_up, two_i, h, topk, None), gated_launch("silu_and_mul", gate_up, act),
            gemv(act, w2, down, h, inter, 1, topk_weights), _sum(down, t, h, topk)]


# Launch rule, grouped: BLOCK_M 16 rows (an expert's rows rarely fill more at these sizes),
# BLOCK_N 64, BLOCK_K 32; the grid covers the most blocks any routing can need,
# ceil(T * TOPK / BLOCK_M) + E, and blocks past the last expert's return at once.
@OPS["fused_moe"].register_impl(
    "triton_grouped", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, w13, w2, topk_weights, topk_ids: _ok(x, w13, w2, topk_weights, topk_ids),
)
def fused_moe_grouped(x, w13, w2, topk_weights, topk_ids):
    (t, topk), (experts, two_i, h) = topk_ids.shape, w13.shape
    rows, inter = t * topk, two_i // 2
    blocks = triton.cdiv(rows, BLOCK_M) + experts
    sorted_rows = _scratch((blocks * BLOCK_M,), torch.int32, x)
    block_expert = _scratch((blocks,), torch.int32, x)
    gate_up, act, down = (_scratch((rows, n), x.dtype, x) for n in (two_i, inter, h))
    align = Launch(moe_align_kernel, (1,), (topk_ids, sorted_rows, block_expert),
                   dict(NUMEL=rows, E=experts, NUM_BLOCKS=blocks, BLOCK_M=BLOCK_M,
                        BLOCK_R=triton.next_power_of_2(max(rows, blocks, BLOCK_M))), num_warps=4)

    def gemm(a, w, out, n, k, a_div, scale):
        meta = dict(NUMEL=rows, N=n, K=k, A_DIV=a_div, SCALE=scale is not None, BLOCK_M=BLOCK_M, BLOCK_N=64, BLOCK_K=32)
        args = (a, w, out, sorted_rows, block_expert, scale)
        return Launch(moe_gemm_kernel, (blocks, triton.cdiv(n, 64)), args, meta, num_warps=4, num_stages=2)

    return [align, gemm(x, w13, gate_up, two_i, h, topk, None), gated_launch("silu_and_mul", gate_up, act),
            gemm(act, w2, down, h, inter, 1, topk_weights), _sum(down, t, h, topk)]
