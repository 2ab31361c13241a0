"""Rotary position embedding (neox layout), alone and fused with q/k norm and the KV-cache write.

With partial rotary (Phi-4-mini) the cos/sin table is narrower than a head: its first columns
rotate, the rest pass through.

Both kernels round like the native op does in 16-bit dtypes: cos and sin are cast to the
activation dtype, and x*cos, x*sin and their sum are each rounded to it (HF's order).
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out, current_launch_context
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def rotary_embedding_kernel(
    # pointers
    x_ptr, positions_ptr, cos_sin_ptr, out_ptr,
    # sizes
    n_heads, head_dim, rot_half, stride_x, stride_out, stride_cos_sin,
    # meta-parameters
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    # program (t, g): heads g*BLOCK_H ... of token t; each head is [x1 | x2 | x3]: x1 and x2
    # (rot_half columns each) rotate, x3 (the rest, with partial rotary) passes through
    token = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_HALF)
    h_ok = (heads < n_heads)[:, None]
    mask = h_ok & (d < rot_half)[None, :]
    offs = heads[:, None] * head_dim + d[None, :]  # [BLOCK_H, BLOCK_HALF], x1's columns
    x1 = tl.load(x_ptr + token * stride_x + offs, mask=mask, other=0.0)
    x2 = tl.load(x_ptr + token * stride_x + rot_half + offs, mask=mask, other=0.0)
    dtype = x1.dtype
    pos = tl.load(positions_ptr + token).to(tl.int64)
    cos = tl.load(cos_sin_ptr + pos * stride_cos_sin + d, mask=d < rot_half, other=0.0).to(dtype).to(tl.float32)
    sin = tl.load(cos_sin_ptr + pos * stride_cos_sin + rot_half + d, mask=d < rot_half, other=0.0).to(dtype).to(tl.float32)
    x1, x2 = x1.to(tl.float32), x2.to(tl.float32)
    # out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2 | x1]
    out1 = (x1 * cos[None, :]).to(dtype).to(tl.float32) - (x2 * sin[None, :]).to(dtype).to(tl.float32)
    out2 = (x2 * cos[None, :]).to(dtype).to(tl.float32) + (x1 * sin[None, :]).to(dtype).to(tl.float32)
    tl.store(out_ptr + token * stride_out + offs, out1, mask=mask)
    tl.store(out_ptr + token * stride_out + rot_half + offs, out2, mask=mask)
    rest = h_ok & (d < head_dim - 2 * rot_half)[None, :]
    x3 = tl.load(x_ptr + token * stride_x + 2 * rot_half + offs, mask=rest, other=0.0)
    tl.store(out_ptr + token * stride_out + 2 * rot_half + offs, x3, mask=rest)


@triton.jit
def qkv_rope_cache_kernel(
    # pointers
    qkv_ptr, positions_ptr, cos_sin_ptr, q_norm_ptr, k_norm_ptr, k_cache_ptr, v_cache_ptr, slot_mapping_ptr, q_out_ptr,
    # sizes
    n_q_heads, n_kv_heads, head_dim, rot_half, stride_qkv, stride_cos_sin, stride_k_slot, stride_v_slot, stride_q_out, eps,
    # meta-parameters
    BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, HAS_Q_NORM: tl.constexpr, HAS_K_NORM: tl.constexpr,
):
    # program (t, g): heads g*BLOCK_H ... of token t, counting q heads then k heads (their order in
    # the qkv row, so head h sits at columns h*head_dim ...); a k head also moves its v head. Each
    # head is [x1 | x2 | x3]: x1 and x2 (rot_half columns each) rotate, x3 passes through
    token = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, BLOCK_HALF)
    is_q = heads < n_q_heads
    is_k = (heads >= n_q_heads) & (heads < n_q_heads + n_kv_heads)
    mask = (is_q | is_k)[:, None] & (d < rot_half)[None, :]
    rest = (is_q | is_k)[:, None] & (d < head_dim - 2 * rot_half)[None, :]
    row = qkv_ptr + token * stride_qkv
    offs = heads[:, None] * head_dim + d[None, :]  # [BLOCK_H, BLOCK_HALF], x1's columns
    x1 = tl.load(row + offs, mask=mask, other=0.0)
    x2 = tl.load(row + rot_half + offs, mask=mask, other=0.0)
    x3 = tl.load(row + 2 * rot_half + offs, mask=rest, other=0.0)
    dtype = x1.dtype
    x1, x2, x3 = x1.to(tl.float32), x2.to(tl.float32), x3.to(tl.float32)
    if HAS_Q_NORM or HAS_K_NORM:
        # rms norm per head: statistics in float32, scaled value rounded, times the weight, rounded
        rstd = tl.rsqrt((tl.sum(x1 * x1, 1) + tl.sum(x2 * x2, 1) + tl.sum(x3 * x3, 1)) / head_dim + eps)[:, None]
        y1 = (x1 * rstd).to(dtype).to(tl.float32)
        y2 = (x2 * rstd).to(dtype).to(tl.float32)
        y3 = (x3 * rstd).to(dtype).to(tl.float32)
        if HAS_Q_NORM:
            w1 = tl.load(q_norm_ptr + d, mask=d < rot_half, other=0.0).to(tl.float32)[None, :]
            w2 = tl.load(q_norm_ptr + rot_half + d, mask=d < rot_half, other=0.0).to(tl.float32)[None, :]
            w3 = tl.load(q_norm_ptr + 2 * rot_half + d, mask=d < head_dim - 2 * rot_half, other=0.0).to(tl.float32)[None, :]
            x1 = tl.where(is_q[:, None], (w1 * y1).to(dtype).to(tl.float32), x1)
            x2 = tl.where(is_q[:, None], (w2 * y2).to(dtype).to(tl.float32), x2)
            x3 = tl.where(is_q[:, None], (w3 * y3).to(dtype).to(tl.float32), x3)
        if HAS_K_NORM:
            w1 = tl.load(k_norm_ptr + d, mask=d < rot_half, other=0.0).to(tl.float32)[None, :]
            w2 = tl.load(k_norm_ptr + rot_half + d, mask=d < rot_half, other=0.0).to(tl.float32)[None, :]
            w3 = tl.load(k_norm_ptr + 2 * rot_half + d, mask=d < head_dim - 2 * rot_half, other=0.0).to(tl.float32)[None, :]
            x1 = tl.where(is_k[:, None], (w1 * y1).to(dtype).to(tl.float32), x1)
            x2 = tl.where(is_k[:, None], (w2 * y2).to(dtype).to(tl.float32), x2)
            x3 = tl.where(is_k[:, None], (w3 * y3).to(dtype).to(tl.float32), x3)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    cos = tl.load(cos_sin_ptr + pos * stride_cos_sin + d, mask=d < rot_half, other=0.0).to(dtype).to(tl.float32)
    sin = tl.load(cos_sin_ptr + pos * stride_cos_sin + rot_half + d, mask=d < rot_half, other=0.0).to(dtype).to(tl.float32)
    # out = x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2 | x1]
    out1 = (x1 * cos[None, :]).to(dtype).to(tl.float32) - (x2 * sin[None, :]).to(dtype).to(tl.float32)
    out2 = (x2 * cos[None, :]).to(dtype).to(tl.float32) + (x1 * sin[None, :]).to(dtype).to(tl.float32)
    out1, out2, out3 = out1.to(dtype), out2.to(dtype), x3.to(dtype)
    # q heads: the rotated q output
    q_out = q_out_ptr + token * stride_q_out + offs
    tl.store(q_out, out1, mask=is_q[:, None] & mask)
    tl.store(q_out + rot_half, out2, mask=is_q[:, None] & mask)
    tl.store(q_out + 2 * rot_half, out3, mask=is_q[:, None] & rest)
    # k heads: rotated k and untouched v to slot slot_mapping[t] of the caches (none when < 0)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    to_cache = (is_k & (slot >= 0))[:, None]
    kv_offs = offs - n_q_heads * head_dim  # k head j at columns j*head_dim ... of a cache slot
    k_out = k_cache_ptr + slot * stride_k_slot + kv_offs
    tl.store(k_out, out1, mask=to_cache & mask)
    tl.store(k_out + rot_half, out2, mask=to_cache & mask)
    tl.store(k_out + 2 * rot_half, out3, mask=to_cache & rest)
    v_in = row + offs + n_kv_heads * head_dim  # v head j follows all k heads in the qkv row
    v_out = v_cache_ptr + slot * stride_v_slot + kv_offs
    tl.store(v_out, tl.load(v_in, mask=to_cache & mask, other=0.0), mask=to_cache & mask)  # v in the same pieces
    tl.store(v_out + rot_half, tl.load(v_in + rot_half, mask=to_cache & mask, other=0.0), mask=to_cache & mask)
    tl.store(v_out + 2 * rot_half, tl.load(v_in + 2 * rot_half, mask=to_cache & rest, other=0.0), mask=to_cache & rest)


def _head_blocks(tokens, heads, head_dim, rot):
    # a program holds up to 256 (head, half-column) pairs: 4 heads of 128, 8 of 64; fewer heads when
    # that leaves multiprocessors idle (a decode step of a few tokens: one head per program)
    block_half = triton.next_power_of_2(max(rot // 2, head_dim - rot))
    block_h = min(triton.next_power_of_2(heads), max(1, 256 // block_half))
    while block_h > 1 and tokens * triton.cdiv(heads, block_h) < current_launch_context().num_sms:
        block_h //= 2
    return block_h, block_half


@OPS["rotary_embedding"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda q, k, positions, cos_sin_cache, head_dim: cos_sin_cache.shape[1] % 2 == 0
    and cos_sin_cache.shape[1] <= head_dim and q.shape[1] % head_dim == 0 and k.shape[1] % head_dim == 0
    and q.stride(1) == k.stride(1) == cos_sin_cache.stride(1) == 1,
)
def rotary_embedding_triton(q, k, positions, cos_sin_cache, head_dim):
    # one launch for q and one for k; grid (tokens, head groups)
    launches = []
    for i, x in enumerate((q, k)):
        heads = x.shape[1] // head_dim
        block_h, block_half = _head_blocks(x.shape[0], heads, head_dim, cos_sin_cache.shape[1])
        launches.append(Launch(
            rotary_embedding_kernel,
            grid=(x.shape[0], triton.cdiv(heads, block_h)),
            args=(x, positions, cos_sin_cache, Out(i), heads, head_dim, cos_sin_cache.shape[1] // 2, x.stride(0), x.shape[1],
                  cos_sin_cache.stride(0)),
            constexprs={"BLOCK_H": block_h, "BLOCK_HALF": block_half},
            num_warps=1 if block_h <= 2 else 2,
        ))
    return launches


def _qkv_rope_cache_fits(qkv, positions, cos_sin_cache, q_norm_weight, k_norm_weight, k_cache, v_cache,
                         slot_mapping, num_q_heads, num_kv_heads, head_dim, eps) -> bool:
    return (
        qkv.shape[1] == (num_q_heads + 2 * num_kv_heads) * head_dim and qkv.stride(1) == 1
        and cos_sin_cache.shape[1] % 2 == 0 and cos_sin_cache.shape[1] <= head_dim and cos_sin_cache.stride(1) == 1
        and all(w is None or w.shape == (head_dim,) for w in (q_norm_weight, k_norm_weight))
        and k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.shape[2:] == (num_kv_heads, head_dim)
        and v_cache.shape[2:] == (num_kv_heads, head_dim)
    )


@OPS["qkv_rope_cache"].register_impl("triton", targets=GPU_TARGETS, launches=True, supports_args=_qkv_rope_cache_fits)
def qkv_rope_cache_triton(qkv, positions, cos_sin_cache, q_norm_weight, k_norm_weight, k_cache, v_cache,
                          slot_mapping, num_q_heads, num_kv_heads, head_dim, eps):
    # grid (tokens, groups of q-then-k heads); everything of a head stays in registers
    block_h, block_half = _head_blocks(qkv.shape[0], num_q_heads + num_kv_heads, head_dim, cos_sin_cache.shape[1])
    return [
        Launch(
            qkv_rope_cache_kernel,
            grid=(qkv.shape[0], triton.cdiv(num_q_heads + num_kv_heads, block_h)),
            args=(qkv, positions, cos_sin_cache, q_norm_weight, k_norm_weight, k_cache, v_cache, slot_mapping, Out(0),
                  num_q_heads, num_kv_heads, head_dim, cos_sin_cache.shape[1] // 2, qkv.stride(0), cos_sin_cache.stride(0),
                  k_cache.stride(1), v_cache.stride(1), num_q_heads * head_dim, eps),
            constexprs={"BLOCK_H": block_h, "BLOCK_HALF": block_half,
                        "HAS_Q_NORM": q_norm_weight is not None, "HAS_K_NORM": k_norm_weight is not None},
            num_warps=1 if block_h <= 2 else 2,
        )
    ]
