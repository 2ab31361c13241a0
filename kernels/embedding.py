"""Token embedding gather: row input_ids[t] of the embedding table for every token t."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def embedding_kernel(
    # pointers
    input_ids_ptr, weight_ptr, out_ptr,
    # sizes
    hidden, stride_weight, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): columns c*BLOCK ... of token t's row
    token = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < hidden
    row = tl.load(input_ids_ptr + token).to(tl.int64)
    x = tl.load(weight_ptr + row * stride_weight + cols, mask=mask)
    tl.store(out_ptr + token.to(tl.int64) * stride_out + cols, x, mask=mask)


@OPS["embedding"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda input_ids, weight: input_ids.dim() == 1 and weight.dim() == 2 and weight.stride(1) == 1,
)
def embedding_triton(input_ids, weight):
    # grid (tokens, column blocks of up to 1024)
    hidden = weight.shape[1]
    block = min(triton.next_power_of_2(hidden), 1024)
    return [
        Launch(
            embedding_kernel,
            grid=(input_ids.shape[0], triton.cdiv(hidden, block)),
            args=(input_ids, weight, Out(0), hidden, weight.stride(0), hidden),
            constexprs={"BLOCK": block},
            num_warps=4,
        )
    ]
