"""Causal attention over the paged KV cache (`paged_attention`), for decode and prefill.

Keys and values are read through each sequence's block table: token t of sequence b sits in
cache block block_tables[b, t // BLOCK_SIZE], slot t % BLOCK_SIZE. Softmax is online, in fp32,
base 2 (the scale folded with log2 e). Head counts, head_dim and the cache block size are
constexprs (fixed per model and build); sequence and token counts are runtime ints, so one
compiled kernel serves every bucket. Every output row is written: rows of no sequence as zeros.
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.targets import GPU_TARGETS

LOG2E = 1.4426950408889634


@triton.jit
def decode_attention_kernel(
    # pointers
    q_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM]
    v_cache_ptr,  # same
    block_tables_ptr,  # [num_seqs, max_blocks] int32
    seq_lens_ptr,  # [num_seqs] int32
    query_start_loc_ptr,  # [num_seqs + 1] int32
    out_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    # sizes
    num_seqs,
    num_tokens,
    max_blocks,
    qk_scale,  # softmax scale * log2(e)
    sliding_window,
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    SOFT_CAP: tl.constexpr,  # > 0: scores (base 2) -> SOFT_CAP * tanh(scores / SOFT_CAP); the cap times log2(e)
    # meta-parameters
    HEADS: tl.constexpr,  # query heads per program, all of one KV head (a divisor of the group)
    BLOCK_G: tl.constexpr,  # HEADS padded to >= 16 for tl.dot
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per step
):
    # program (i, h): sequence i's one new token, for query heads h * HEADS ... + HEADS (which
    # share one KV head, read once for all of them); and output row i, as zeros, when it belongs
    # to no sequence
    i = tl.program_id(0)
    first_head = tl.program_id(1) * HEADS
    kv_head = first_head // (NUM_Q_HEADS // NUM_KV_HEADS)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    d_ok = (offs_d < HEAD_DIM)[None, :]
    head_offs = (first_head + offs_g)[:, None] * HEAD_DIM + offs_d[None, :]

    seq = tl.minimum(i, num_seqs - 1)
    row = tl.load(query_start_loc_ptr + seq)
    has_row = (i < num_seqs) & (tl.load(query_start_loc_ptr + seq + 1) > row)
    seq_len = tl.where(has_row, tl.load(seq_lens_ptr + seq), 0)
    gd_ok = (offs_g < tl.where(has_row, HEADS, 0))[:, None] & d_ok  # nothing when no row
    lo = tl.where(sliding_window > 0, tl.maximum(seq_len - sliding_window, 0), 0)

    q = tl.load(q_ptr + row * (NUM_Q_HEADS * HEAD_DIM) + head_offs, mask=gd_ok, other=0.0)
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    for start in range(lo // BLOCK_N * BLOCK_N, seq_len, BLOCK_N):
        t = start + offs_n
        t_ok = (t >= lo) & (t < seq_len)
        block = tl.load(block_tables_ptr + seq * max_blocks + t // BLOCK_SIZE, mask=t_ok, other=0)
        slot = (block.to(tl.int64) * BLOCK_SIZE + t % BLOCK_SIZE) * NUM_KV_HEADS + kv_head
        kv_offs = slot[:, None] * HEAD_DIM + offs_d[None, :]
        kv_ok = t_ok[:, None] & (offs_d < HEAD_DIM)[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        v = tl.load(v_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        if q_ptr.dtype.element_ty == tl.float32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = s * qk_scale
        if SOFT_CAP > 0:
            s = SOFT_CAP * (1.0 - 2.0 / (tl.exp(2.0 * s / SOFT_CAP) + 1.0))
        s = tl.where(t_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if q_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(p, v, acc * alpha[:, None], input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    row_size = NUM_Q_HEADS * HEAD_DIM
    tl.store(out_ptr + row * row_size + head_offs, out.to(out_ptr.dtype.element_ty), mask=gd_ok)
    pad = (i >= tl.load(query_start_loc_ptr + num_seqs)) & (i < num_tokens)
    pad_ok = (offs_g < tl.where(pad, HEADS, 0))[:, None] & d_ok
    tl.store(out_ptr + i * row_size + head_offs, tl.zeros((BLOCK_G, BLOCK_D), out_ptr.dtype.element_ty), mask=pad_ok)


@triton.jit
def prefill_attention_kernel(
    # pointers
    q_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM]
    v_cache_ptr,  # same
    block_tables_ptr,  # [num_seqs, max_blocks] int32
    seq_lens_ptr,  # [num_seqs] int32
    query_start_loc_ptr,  # [num_seqs + 1] int32
    out_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    # sizes
    num_seqs,
    num_tokens,
    max_blocks,
    qk_scale,  # softmax scale * log2(e)
    sliding_window,
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    SOFT_CAP: tl.constexpr,  # > 0: scores (base 2) -> SOFT_CAP * tanh(scores / SOFT_CAP); the cap times log2(e)
    # meta-parameters
    BLOCK_M: tl.constexpr,  # query rows per program
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per step
):
    # program (j, head): query block j of the list where sequence b owns the blocks numbered
    # from query_start_loc[b] // BLOCK_M + b (so T // BLOCK_M + num_seqs blocks cover any
    # split of T rows, some of them empty); program j also zeroes the rows of no sequence
    # among rows j * BLOCK_M ... + BLOCK_M.
    j = tl.program_id(0)
    head = tl.program_id(1)
    kv_head = head // (NUM_Q_HEADS // NUM_KV_HEADS)
    row_size = NUM_Q_HEADS * HEAD_DIM
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    d_ok = offs_d < HEAD_DIM

    pad_rows = j * BLOCK_M + offs_m
    pad = (pad_rows >= tl.load(query_start_loc_ptr + num_seqs)) & (pad_rows < num_tokens)
    pad_offs = pad_rows[:, None] * row_size + head * HEAD_DIM + offs_d[None, :]
    tl.store(out_ptr + pad_offs, tl.zeros((BLOCK_M, BLOCK_D), out_ptr.dtype.element_ty), mask=pad[:, None] & d_ok[None, :])

    # the sequence: the last b whose first block number is <= j (binary search)
    lo = j * 0
    hi = lo + num_seqs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        take = tl.load(query_start_loc_ptr + mid) // BLOCK_M + mid <= j
        lo = tl.where(take, mid, lo)
        hi = tl.where(take, hi, mid)
    seq = lo
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    first = (j - (q_start // BLOCK_M + seq)) * BLOCK_M  # of this block, within the sequence
    seq_len = tl.load(seq_lens_ptr + seq)
    rows = first + offs_m
    row_ok = rows < q_len
    pos = seq_len - q_len + rows
    # keys this block sees: [lo_k, hi_k)
    hi_k = tl.where(first < q_len, tl.minimum(seq_len, seq_len - q_len + first + BLOCK_M), 0)
    window = tl.where(sliding_window > 0, sliding_window, 1 << 30)
    lo_k = tl.maximum(seq_len - q_len + first - window + 1, 0)

    qo_offs = (q_start + rows)[:, None] * row_size + head * HEAD_DIM + offs_d[None, :]
    qo_ok = row_ok[:, None] & d_ok[None, :]
    q = tl.load(q_ptr + qo_offs, mask=qo_ok, other=0.0)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for start in range(lo_k // BLOCK_N * BLOCK_N, hi_k, BLOCK_N):
        t = start + offs_n
        t_ok = (t >= lo_k) & (t < hi_k)
        block = tl.load(block_tables_ptr + seq * max_blocks + t // BLOCK_SIZE, mask=t_ok, other=0)
        slot = (block.to(tl.int64) * BLOCK_SIZE + t % BLOCK_SIZE) * NUM_KV_HEADS + kv_head
        kv_offs = slot[:, None] * HEAD_DIM + offs_d[None, :]
        kv_ok = t_ok[:, None] & d_ok[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        v = tl.load(v_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        if q_ptr.dtype.element_ty == tl.float32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        visible = t_ok[None, :] & (t[None, :] <= pos[:, None]) & (t[None, :] > pos[:, None] - window)
        s = s * qk_scale
        if SOFT_CAP > 0:
            s = SOFT_CAP * (1.0 - 2.0 / (tl.exp(2.0 * s / SOFT_CAP) + 1.0))
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if q_ptr.dtype.element_ty == tl.float32:
            acc = tl.dot(p, v, acc * alpha[:, None], input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + qo_offs, out.to(out_ptr.dtype.element_ty), mask=qo_ok)


def _dims(q, k_cache, soft_cap=0.0):
    block_size, kv_heads, head_dim = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    return dict(
        NUM_Q_HEADS=q.shape[1] // head_dim, NUM_KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        SOFT_CAP=float(soft_cap) * LOG2E, BLOCK_D=max(16, triton.next_power_of_2(head_dim)),
    )


def _args(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window):
    return (
        q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, Out(0),
        block_tables.shape[0], q.shape[0], block_tables.shape[1], float(scale) * LOG2E, int(sliding_window),
    )


# Launch rules. decode: one program per (sequence or row, group of query heads of one KV head),
# 64 keys a step. Whole GQA groups (K/V read once) unless that leaves multiprocessors idle: then
# smaller groups, whose repeated K/V reads mostly hit L2. No split over the KV length (that needs
# a scratch buffer for the partial results).
@OPS["paged_attention"].register_impl(
    "triton_decode",
    targets=GPU_TARGETS,
    supports_args=lambda q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window: max_query_len == 1,
    launches=True,
)
def paged_attention_decode(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window):
    return _decode(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window, 0.0)


def _decode(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window, soft_cap):
    dims = _dims(q, k_cache, soft_cap)
    rows, q_heads = max(block_tables.shape[0], q.shape[0]), dims["NUM_Q_HEADS"]
    heads = q_heads // dims["NUM_KV_HEADS"]
    while heads % 2 == 0 and rows * q_heads // heads < current_launch_context().num_sms:
        heads //= 2
    meta = dict(dims, HEADS=heads, BLOCK_G=max(16, triton.next_power_of_2(heads)), BLOCK_N=64)
    args = _args(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window)
    return [Launch(decode_attention_kernel, (rows, q_heads // heads), args, meta, num_warps=4, num_stages=3)]


# prefill: BLOCK_M query rows (no more than the longest query needs) by 64 keys a step, one
# program per (query block, query head); the grid covers T // BLOCK_M + num_seqs blocks.
@OPS["paged_attention"].register_impl("triton_prefill", targets=GPU_TARGETS, launches=True)
def paged_attention_prefill(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window):
    return _prefill(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, 0.0)


def _prefill(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap):
    dims = _dims(q, k_cache, soft_cap)
    block_m = min(64, max(16, triton.next_power_of_2(max_query_len)))
    meta = dict(dims, BLOCK_M=block_m, BLOCK_N=64)
    grid = (q.shape[0] // block_m + block_tables.shape[0], dims["NUM_Q_HEADS"])
    args = _args(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window)
    return [Launch(prefill_attention_kernel, grid, args, meta, num_warps=4, num_stages=2)]


# softcap_paged_attention: the same kernels and launch rules, with the cap.
@OPS["softcap_paged_attention"].register_impl(
    "triton_decode",
    targets=GPU_TARGETS,
    supports_args=lambda q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap: max_query_len == 1,
    launches=True,
)
def softcap_attention_decode(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap):
    return _decode(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale, sliding_window, soft_cap)


@OPS["softcap_paged_attention"].register_impl("triton_prefill", targets=GPU_TARGETS, launches=True)
def softcap_attention_prefill(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap):
    return _prefill(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, soft_cap)
