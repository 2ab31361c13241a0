"""`logprobs`: the target token's log probability and the top tokens of each logits row.

One program per row, in blocked passes over the vocabulary: the maximum (and its first index, the
top-1 token), the sum of exp(logits - max), then one pass per further top slot that finds the
largest logit ordered after the previous slot's (smaller value, or equal value and larger id). A
row asks for at most MAX_LOGPROBS slots and pays only for those it asks for.
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.aot.ir.ops.logprobs import MAX_LOGPROBS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def logprobs_kernel(
    # pointers
    logits_ptr, next_tokens_ptr, logprob_token_ids_ptr, num_logprobs_ptr,
    token_logprob_ptr, top_ids_ptr, top_logprobs_ptr,
    # sizes
    vocab, stride_logits,
    # meta-parameters
    K: tl.constexpr, K_PAD: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    logits_row = logits_ptr + row.to(tl.int64) * stride_logits
    offs = tl.arange(0, BLOCK)
    slots = tl.arange(0, K_PAD)
    top_ids = tl.full([K_PAD], -1, tl.int32)
    top_logits = tl.full([K_PAD], float("-inf"), tl.float32)
    token_logprob = 0.0
    n = tl.load(num_logprobs_ptr + row)
    if n >= 0:
        # pass 1: the maximum and its first index, per lane, then across lanes
        best = tl.full([BLOCK], float("-inf"), tl.float32)
        best_idx = tl.full([BLOCK], vocab, tl.int32)
        for start in range(0, vocab, BLOCK):
            valid = start + offs < vocab
            x = tl.load(logits_row + start + offs, mask=valid, other=float("-inf"))
            better = valid & ((x > best) | (best_idx == vocab))
            best = tl.where(better, x, best)
            best_idx = tl.where(better, start + offs, best_idx)
        top = tl.max(best, 0)
        top_idx = tl.min(tl.where(best == top, best_idx, vocab), 0)
        # pass 2: log of the softmax denominator
        acc = tl.zeros([BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            x = tl.load(logits_row + start + offs, mask=start + offs < vocab, other=float("-inf"))
            acc += tl.exp(x - top)
        lse = top + tl.log(tl.sum(acc, 0))
        target = tl.load(logprob_token_ids_ptr + row)
        target = tl.where(target >= 0, target, tl.load(next_tokens_ptr + row))
        target = tl.minimum(tl.maximum(target, 0), vocab - 1)
        token_logprob = tl.load(logits_row + target) - lse
        count = tl.minimum(tl.minimum(n, K), vocab)
        if count > 0:
            top_ids = tl.where(slots == 0, top_idx, top_ids)
            top_logits = tl.where(slots == 0, top, top_logits)
        prev, prev_idx = top, top_idx
        # one pass per further slot: the largest logit ordered after (prev, prev_idx)
        for k in range(1, count):
            best = tl.full([BLOCK], float("-inf"), tl.float32)
            best_idx = tl.full([BLOCK], vocab, tl.int32)
            for start in range(0, vocab, BLOCK):
                idx = start + offs
                x = tl.load(logits_row + idx, mask=idx < vocab, other=float("-inf"))
                after = (idx < vocab) & ((x < prev) | ((x == prev) & (idx > prev_idx)))
                better = after & ((x > best) | (best_idx == vocab))
                best = tl.where(better, x, best)
                best_idx = tl.where(better, idx, best_idx)
            prev = tl.max(best, 0)
            prev_idx = tl.min(tl.where((best == prev) & (best_idx < vocab), best_idx, vocab), 0)
            top_ids = tl.where(slots == k, prev_idx, top_ids)
            top_logits = tl.where(slots == k, prev, top_logits)
        top_logits = tl.where(top_ids >= 0, top_logits - lse, float("-inf"))
    tl.store(token_logprob_ptr + row, token_logprob)
    tl.store(top_ids_ptr + row * K + slots, top_ids, mask=slots < K)
    tl.store(top_logprobs_ptr + row * K + slots, top_logits, mask=slots < K)


@OPS["logprobs"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda logits, next_tokens, logprob_token_ids, num_logprobs: logits.dim() == 2
    and logits.stride(1) == 1 and logits.dtype.is_floating_point and 0 < logits.shape[1] < 2**31 - 1,
)
def logprobs_triton(logits, next_tokens, logprob_token_ids, num_logprobs):
    # grid (rows,): blocks of 1024 logits; the top slots padded to a power of two in registers
    return [
        Launch(
            logprobs_kernel,
            grid=(logits.shape[0],),
            args=(logits, next_tokens, logprob_token_ids, num_logprobs, Out(0), Out(1), Out(2),
                  logits.shape[1], logits.stride(0)),
            constexprs={"K": MAX_LOGPROBS, "K_PAD": triton.next_power_of_2(MAX_LOGPROBS), "BLOCK": 1024},
            num_warps=8,
        )
    ]
