"""Split-KV decode attention (`split_kv_paged_attention`, flash-decoding): the KV length of each
sequence is split over programs that each write a partial softmax (normalised output, running
max, sum, base 2) to the workspace; a reduction kernel combines them. With one split the first
kernel writes the output itself. Every output row is written: rows of no sequence as zeros.
"""

import torch
import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.targets import GPU_TARGETS

LOG2E = 1.4426950408889634
MIN_KEYS_PER_SPLIT = 128  # fewer keys than this per program: splitting costs more than it gains
SPLIT_FROM = 512  # plans serving fewer keys per sequence take the one-pass decode kernel
BLOCK_N, NUM_WARPS, NUM_STAGES = 64, 4, 3  # keys per step of the split kernel, and its launch
WIDE = (128, 2, 200_000)  # with splits, where shared memory allows: 128 keys a step, 2 stages


@triton.jit
def split_kv_attention_kernel(
    # pointers
    q_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    k_cache_ptr,  # [num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM]
    v_cache_ptr,  # same
    block_tables_ptr,  # [num_seqs, max_blocks] int32
    seq_lens_ptr,  # [num_seqs] int32
    query_start_loc_ptr,  # [num_seqs + 1] int32
    out_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM] (written only when DIRECT)
    work_ptr,  # [T, NUM_Q_HEADS, MAX_SPLITS, HEAD_DIM + 2] float32
    # sizes
    num_seqs,
    num_tokens,
    max_blocks,
    qk_scale,  # softmax scale * log2(e)
    sliding_window,
    split_len,  # keys per split, a multiple of BLOCK_N
    NUM_Q_HEADS: tl.constexpr,
    NUM_KV_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
    MAX_SPLITS: tl.constexpr,
    # meta-parameters
    DIRECT: tl.constexpr,  # one split: write the output (and zero padded rows) here
    HEADS: tl.constexpr,  # query heads per program, all of one KV head
    BLOCK_G: tl.constexpr,  # HEADS padded to >= 16 for tl.dot
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,  # keys per step
):
    # program (i, h, s): keys [s * split_len, (s + 1) * split_len) of sequence i's one new token,
    # for query heads h * HEADS ... + HEADS
    i = tl.program_id(0)
    first_head = tl.program_id(1) * HEADS
    split = tl.program_id(2)
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
    g_ok = offs_g < tl.where(has_row, HEADS, 0)
    gd_ok = g_ok[:, None] & d_ok
    lo = tl.where(sliding_window > 0, tl.maximum(seq_len - sliding_window, 0), 0)
    k_lo = tl.maximum(lo, split * split_len)
    k_hi = tl.minimum(seq_len, (split + 1) * split_len)

    q = tl.load(q_ptr + row * (NUM_Q_HEADS * HEAD_DIM) + head_offs, mask=gd_ok, other=0.0)
    m_i = tl.full((BLOCK_G,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_G,), tl.float32)
    acc = tl.zeros((BLOCK_G, BLOCK_D), tl.float32)
    for start in range(k_lo // BLOCK_N * BLOCK_N, k_hi, BLOCK_N):
        t = start + offs_n
        t_ok = (t >= k_lo) & (t < k_hi)
        block = tl.load(block_tables_ptr + seq * max_blocks + t // BLOCK_SIZE, mask=t_ok, other=0)
        slot = (block.to(tl.int64) * BLOCK_SIZE + t % BLOCK_SIZE) * NUM_KV_HEADS + kv_head
        kv_offs = slot[:, None] * HEAD_DIM + offs_d[None, :]
        kv_ok = t_ok[:, None] & d_ok
        k = tl.load(k_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        v = tl.load(v_cache_ptr + kv_offs, mask=kv_ok, other=0.0)
        if q_ptr.dtype.element_ty == tl.float32:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = tl.where(t_ok[None, :], s * qk_scale, float("-inf"))
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
    if DIRECT:
        tl.store(out_ptr + row * row_size + head_offs, out.to(out_ptr.dtype.element_ty), mask=gd_ok)
        pad = (i >= tl.load(query_start_loc_ptr + num_seqs)) & (i < num_tokens)
        pad_ok = (offs_g < tl.where(pad, HEADS, 0))[:, None] & d_ok
        tl.store(out_ptr + i * row_size + head_offs, tl.zeros((BLOCK_G, BLOCK_D), out_ptr.dtype.element_ty), mask=pad_ok)
    else:
        # workspace[row, head, split] = (out, max, sum); an empty split has sum 0
        part = ((row * NUM_Q_HEADS + first_head + offs_g) * MAX_SPLITS + split) * (HEAD_DIM + 2)
        tl.store(work_ptr + part[:, None] + offs_d[None, :], out, mask=gd_ok)
        tl.store(work_ptr + part + HEAD_DIM, tl.where(l_i > 0, m_i, 0.0), mask=g_ok)
        tl.store(work_ptr + part + HEAD_DIM + 1, l_i, mask=g_ok)


@triton.jit
def split_kv_reduce_kernel(
    # pointers
    work_ptr,  # [T, NUM_Q_HEADS, MAX_SPLITS, HEAD_DIM + 2] float32
    query_start_loc_ptr,  # [num_seqs + 1] int32
    out_ptr,  # [T, NUM_Q_HEADS * HEAD_DIM]
    # sizes
    num_seqs,
    num_tokens,
    num_splits,
    NUM_Q_HEADS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    MAX_SPLITS: tl.constexpr,
    # meta-parameters
    BLOCK_S: tl.constexpr,  # num_splits padded to a power of two
    BLOCK_D: tl.constexpr,
):
    # program (i, head): sequence i's output row for one head, sum_s w_s * out_s / sum_s w_s with
    # w_s = sum_s * 2^(max_s - max); and row i, as zeros, when it belongs to no sequence
    i = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    row_size = NUM_Q_HEADS * HEAD_DIM
    seq = tl.minimum(i, num_seqs - 1)
    row = tl.load(query_start_loc_ptr + seq)
    has_row = (i < num_seqs) & (tl.load(query_start_loc_ptr + seq + 1) > row)
    s_ok = offs_s < tl.where(has_row, num_splits, 0)
    part = ((row * NUM_Q_HEADS + head) * MAX_SPLITS + offs_s) * (HEAD_DIM + 2)
    l_s = tl.load(work_ptr + part + HEAD_DIM + 1, mask=s_ok, other=0.0)
    m_s = tl.load(work_ptr + part + HEAD_DIM, mask=s_ok, other=0.0)
    m_s = tl.where(l_s > 0, m_s, float("-inf"))
    m = tl.max(m_s, 0)
    w = tl.where(l_s > 0, l_s * tl.exp2(m_s - tl.where(m == float("-inf"), 0.0, m)), 0.0)
    parts = tl.load(work_ptr + part[:, None] + offs_d[None, :], mask=(l_s > 0)[:, None] & d_ok[None, :], other=0.0)
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + row * row_size + head * HEAD_DIM + offs_d, out.to(out_ptr.dtype.element_ty), mask=d_ok & has_row)
    pad = (i >= tl.load(query_start_loc_ptr + num_seqs)) & (i < num_tokens)
    tl.store(out_ptr + i * row_size + head * HEAD_DIM + offs_d, tl.zeros((BLOCK_D,), out_ptr.dtype.element_ty),
             mask=d_ok & pad)


def num_splits(rows: int, programs_per_row: int, context: int, max_splits: int, num_sms: int) -> int:
    """Split the KV length (doubling) while the grid stays within two waves of the multiprocessors
    and each split keeps at least MIN_KEYS_PER_SPLIT keys."""
    splits = 1
    while (splits * 2 <= max_splits and rows * programs_per_row * splits * 2 <= 2 * num_sms
           and context >= 2 * splits * MIN_KEYS_PER_SPLIT):
        splits *= 2
    return splits


# Launch rule: whole GQA groups per program (K/V read once); the number of splits from the batch
# (rows), the heads and the context this plan serves (max_blocks x block size), on this target's
# multiprocessors; one split runs one kernel, more add the reduction. Measured on an H200
# (benchmarks/h200/sweep_decode.py, Qwen3-0.6B heads, context 2048): at batch 1, 16 splits of 128
# keys a step take 7.3 / 8.5 / 9.8 us for sequences of 128 / 1024 / 2000 tokens, against 8.2 /
# 12.4 / 13.5 us for 8 splits of 64; one split keeps 64 keys a step (48.0 against 50.1 us at
# batch 64, 512 tokens).
@OPS["split_kv_paged_attention"].register_impl(
    "triton_split_kv",
    targets=GPU_TARGETS,
    supports_args=lambda q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window, max_splits: max_query_len == 1,
    launches=True,
)
def split_kv_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale,
                       sliding_window, max_splits):
    block_size, kv_heads, head_dim = k_cache.shape[1], k_cache.shape[2], k_cache.shape[3]
    q_heads = q.shape[1] // head_dim
    heads = q_heads // kv_heads
    rows = max(block_tables.shape[0], q.shape[0])
    context = block_tables.shape[1] * block_size
    splits = num_splits(rows, kv_heads, context, max_splits, current_launch_context().num_sms)
    block_n, warps, stages = BLOCK_N, NUM_WARPS, NUM_STAGES
    if splits > 1 and current_launch_context().shared_mem_per_block >= WIDE[2]:
        block_n, stages = WIDE[0], WIDE[1]
    split_len = -(-context // splits // block_n) * block_n
    block_d = max(16, triton.next_power_of_2(head_dim))
    meta = dict(NUM_Q_HEADS=q_heads, NUM_KV_HEADS=kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=block_size, MAX_SPLITS=max_splits,
                DIRECT=splits == 1, HEADS=heads, BLOCK_G=max(16, triton.next_power_of_2(heads)), BLOCK_D=block_d,
                BLOCK_N=block_n)
    sizes = (block_tables.shape[0], q.shape[0])
    args = (q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, Out(0), Out(1), *sizes, block_tables.shape[1],
            float(scale) * LOG2E, int(sliding_window), split_len)
    launches = [Launch(split_kv_attention_kernel, (rows, kv_heads, splits), args, meta, num_warps=warps,
                       num_stages=stages)]
    if splits > 1:
        reduce_meta = dict(NUM_Q_HEADS=q_heads, HEAD_DIM=head_dim, MAX_SPLITS=max_splits,
                           BLOCK_S=triton.next_power_of_2(splits), BLOCK_D=block_d)
        launches.append(Launch(split_kv_reduce_kernel, (rows, q_heads), (Out(1), query_start_loc, Out(0), *sizes, splits),
                               reduce_meta, num_warps=4, num_stages=1))
    return launches


MAX_SPLITS = 32


def _splits_for(q, k_cache, block_tables) -> int:
    rows = max(block_tables.shape[0], q.shape[0])
    return num_splits(rows, k_cache.shape[2], block_tables.shape[1] * k_cache.shape[1], MAX_SPLITS,
                      current_launch_context().num_sms)


def _long_context(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale, sliding_window):
    return max_query_len == 1 and block_tables.shape[1] * k_cache.shape[1] >= SPLIT_FROM


# As a provider of plain decode attention: chosen (by the priority list) for decode plans whose
# context is long enough to split; the workspace is a scratch buffer the planner places in the arena.
@OPS["paged_attention"].register_impl("triton_split_kv", targets=GPU_TARGETS, supports_args=_long_context, launches=True)
def paged_attention_split_kv(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale,
                             sliding_window):
    splits = _splits_for(q, k_cache, block_tables)
    head_dim = k_cache.shape[3]
    workspace = torch.empty((q.shape[0], q.shape[1] // head_dim, splits, head_dim + 2), dtype=torch.float32,
                            device=q.device)
    launches = split_kv_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, max_query_len, scale,
                                  sliding_window, splits)
    return [_workspace_in(launch, workspace) for launch in launches]


def _workspace_in(launch: Launch, workspace) -> Launch:
    from dataclasses import replace

    return replace(launch, args=tuple(workspace if isinstance(a, Out) and a.index == 1 else a for a in launch.args))
