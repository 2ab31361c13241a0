"""`moe_route`: softmax over the router logits, the top k experts, optionally renormalised."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def moe_route_kernel(
    # pointers
    logits_ptr,  # [T, E]
    weights_ptr,  # [T, TOPK] float32
    ids_ptr,  # [T, TOPK] int32
    # sizes
    stride_logits,
    E: tl.constexpr,
    TOPK: tl.constexpr,
    # meta-parameters
    RENORMALIZE: tl.constexpr,
    BLOCK_E: tl.constexpr,
):
    # program t: token t's row; the k largest by repeated argmax (lowest index on ties)
    t = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_E)
    ok = offs < E
    x = tl.load(logits_ptr + t * stride_logits + offs, mask=ok, other=float("-inf")).to(tl.float32)
    e = tl.exp(x - tl.max(x, 0))
    p = tl.where(ok, e / tl.sum(e, 0), -1.0)
    q = p
    total = 0.0
    for j in tl.static_range(TOPK):  # the sum of the k largest, for renormalising
        best = tl.max(q, 0)
        total += best
        q = tl.where(offs == tl.min(tl.where(q == best, offs, BLOCK_E), 0), -1.0, q)
    denom = total if RENORMALIZE else 1.0
    for j in tl.static_range(TOPK):
        best = tl.max(p, 0)
        idx = tl.min(tl.where(p == best, offs, BLOCK_E), 0)
        tl.store(ids_ptr + t * TOPK + j, idx.to(tl.int32))
        tl.store(weights_ptr + t * TOPK + j, best / denom)
        p = tl.where(offs == idx, -1.0, p)


@OPS["moe_route"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda logits, top_k, renormalize: logits.dim() == 2 and logits.stride(1) == 1
    and 0 < top_k <= logits.shape[1] <= 1024,
)
def moe_route_triton(logits, top_k, renormalize):
    # grid (tokens,): one program reads a whole row of E logits
    experts = logits.shape[1]
    meta = dict(E=experts, TOPK=top_k, RENORMALIZE=bool(renormalize), BLOCK_E=triton.next_power_of_2(experts))
    return [Launch(moe_route_kernel, (logits.shape[0],), (logits, Out(0), Out(1), logits.stride(0)), meta, num_warps=1)]
