"""Sampling the next token: greedy argmax, or temperature / top-k / top-p / min-p with a given uniform draw.

One program per row, in blocked passes over the vocabulary, without sorting. With
e = exp((logits - max) / temperature) (softmax before the division by its sum), the kept set of
the native op is {e >= threshold}, where the threshold is the largest value x with
    count(e >= x) >= top_k   or   mass(e >= x) >= top_p * sum(e)   or   x <= min_p
(x <= the k-th largest, or x <= the top-p cut, or x <= min_p * max(e) = min_p: the largest of the
cuts wins). Every side is monotone in x, so the kernel searches the float32 bit patterns of x (ordered like the values for
x >= 0), testing SPLIT candidates per pass: exact in about 30 / log2(SPLIT + 1) passes. The token
is then the first index whose running kept mass exceeds uniform * (kept total).
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def sample_kernel(
    # pointers
    logits_ptr, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, uniform_ptr, out_ptr,
    # sizes
    vocab, stride_logits,
    # meta-parameters
    BLOCK: tl.constexpr, SPLIT: tl.constexpr, ARGMAX_BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    logits_row = logits_ptr + row.to(tl.int64) * stride_logits
    # pass 1: the maximum and its first index, per lane, then across lanes (greedy's answer)
    offs_a = tl.arange(0, ARGMAX_BLOCK)
    best = tl.full([ARGMAX_BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([ARGMAX_BLOCK], tl.int32)
    for start in range(0, vocab, ARGMAX_BLOCK):
        x = tl.load(logits_row + start + offs_a, mask=start + offs_a < vocab, other=float("-inf"))
        better = x > best
        best = tl.where(better, x, best)
        best_idx = tl.where(better, start + offs_a, best_idx)
    offs = tl.arange(0, BLOCK)
    top = tl.max(best, 0)
    token = tl.min(tl.where(best == top, best_idx, vocab), 0)
    t = tl.load(temperature_ptr + row)
    if t > 0:
        # pass 2: the softmax sum of e = exp((logits - max) / t), in (0, 1]
        scale = 1.0 / t
        acc = tl.zeros([BLOCK], tl.float32)
        for start in range(0, vocab, BLOCK):
            x = tl.load(logits_row + start + offs, mask=start + offs < vocab, other=float("-inf"))
            acc += tl.exp((x - top) * scale)
        total = tl.sum(acc, 0)
        # the threshold: bisection over bit patterns lo (condition holds) < hi (it does not)
        # a cut that is off asks for more than there is: more tokens than vocab, more mass than total
        k = tl.load(top_k_ptr + row)
        top_p = tl.load(top_p_ptr + row)
        min_p = tl.load(min_p_ptr + row)
        use_k = (k > 0) & (k < vocab)
        use_p = top_p < 1.0
        use_min_p = min_p > 0.0
        k = tl.where(use_k, k, vocab + 1)
        mass_needed = tl.where(use_p, top_p * total, float("inf"))
        lo = tl.zeros([1], tl.int64)  # e >= 0.0: every token, holding all the mass
        hi = tl.full([1], 0x3F800001, tl.int64)  # just above e = 1.0, the maximum
        lo_mass = tl.zeros([1], tl.float32) + total
        split = tl.arange(0, SPLIT)
        if use_k | use_p | use_min_p:
            while tl.max(hi - lo, 0) > 1:
                cand = lo + (hi - lo) * (split + 1) // (SPLIT + 1)  # [SPLIT], in [lo, hi)
                x_cand = cand.to(tl.int32).to(tl.float32, bitcast=True)
                count = tl.zeros([SPLIT], tl.int32)
                mass = tl.zeros([SPLIT], tl.float32)
                for start in range(0, vocab, BLOCK):
                    valid = start + offs < vocab
                    x = tl.load(logits_row + start + offs, mask=valid)
                    e = tl.where(valid, tl.exp((x - top) * scale), -1.0)  # lanes past the end: below any x
                    ge = e[None, :] >= x_cand[:, None]  # [SPLIT, BLOCK]
                    count += tl.sum(ge.to(tl.int32), 1)
                    mass += tl.sum(tl.where(ge, e[None, :], 0.0), 1)
                holds = (count >= k) | (mass >= mass_needed) | (x_cand <= min_p)
                lo = tl.max(tl.where(holds, cand, lo), 0, keep_dims=True)
                lo_mass = tl.min(tl.where(holds, mass, lo_mass), 0, keep_dims=True)
                hi = tl.min(tl.where(holds, hi, cand), 0, keep_dims=True)
        threshold = tl.max(lo, 0).to(tl.int32).to(tl.float32, bitcast=True)
        target = tl.load(uniform_ptr + row) * tl.max(lo_mass, 0)
        # last pass: the first token whose running kept mass exceeds target, in vocabulary order
        token = vocab
        running = 0.0
        start = 0
        while (start < vocab) & (token == vocab):
            valid = start + offs < vocab
            x = tl.load(logits_row + start + offs, mask=valid, other=float("-inf"))
            e = tl.exp((x - top) * scale)
            kept = tl.where(valid & (e >= threshold), e, 0.0)
            above = (running + tl.cumsum(kept, 0) > target) & valid
            token = tl.min(tl.where(above, start + offs, vocab), 0)
            running += tl.sum(kept, 0)
            start += BLOCK
        token = tl.minimum(token, vocab - 1)
    tl.store(out_ptr + row, token)


# Launch rule: one program per row, 8 warps; the argmax pass reads 8192 logits a step (greedy over
# 151,936: 15.6 us against 35.9 at 1024 on an H200, benchmarks/h200/sweep_decode.py), the passes
# of sampling 1024 (their [SPLIT, BLOCK] tests stay in registers).
@OPS["sample"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda logits, temperature, top_k, top_p, min_p, uniform: logits.dim() == 2 and logits.stride(1) == 1
    and logits.shape[1] < 2**31 - 1,
)
def sample_triton(logits, temperature, top_k, top_p, min_p, uniform):
    # grid (rows,); blocks of 1024 logits, 4 threshold candidates per search pass (13 passes at most)
    return [
        Launch(
            sample_kernel,
            grid=(logits.shape[0],),
            args=(logits, temperature, top_k, top_p, min_p, uniform, Out(0), logits.shape[1], logits.stride(0)),
            constexprs={"BLOCK": 1024, "SPLIT": 4, "ARGMAX_BLOCK": 8192},
            num_warps=8,
        )
    ]
