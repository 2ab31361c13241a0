"""Vocab-parallel embedding gather: this rank's rows for the ids in its vocabulary slice, zeros elsewhere."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def vocab_parallel_embedding_kernel(
    # pointers
    input_ids_ptr, weight_ptr, vocab_start_ptr, out_ptr,
    # sizes
    rows, hidden, stride_weight, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): columns c*BLOCK ... of token t's row
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    row = tl.load(input_ids_ptr + token).to(tl.int64) - tl.load(vocab_start_ptr).to(tl.int64)
    inside = (row >= 0) & (row < rows)
    x = tl.load(weight_ptr + row * stride_weight + cols, mask=mask & inside, other=0.0)
    tl.store(out_ptr + token.to(tl.int64) * stride_out + cols, x, mask=mask)


@OPS["vocab_parallel_embedding"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda input_ids, weight, vocab_start: (input_ids.dim() == 1 and weight.dim() == 2
                                                          and weight.stride(1) == 1 and vocab_start.numel() == 1),
)
def vocab_parallel_embedding_triton(input_ids, weight, vocab_start):
    # grid (tokens, column blocks of up to 1024)
    rows, hidden = weight.shape
    block = min(triton.next_power_of_2(hidden), 1024)
    return [
        Launch(
            vocab_parallel_embedding_kernel,
            grid=(input_ids.shape[0], triton.cdiv(hidden, block)),
            args=(input_ids, weight, vocab_start, Out(0), rows, hidden, weight.stride(0), hidden),
            constexprs={"BLOCK": block},
            num_warps=4,
        )
    ]
