"""edit_logits: the allow-mask while copying the logits, then the sparse edits scattered onto the copy.

Two launches on one stream: `mask_copy_kernel` writes every output element (a masked-out token as
-inf), `edit_kernel` then reads and rewrites the few (row, token) entries of the edits. A masked
token stays -inf through an edit (-inf + bias, times a positive scale, plus add).
"""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def mask_copy_kernel(
    # pointers
    logits_ptr, bitmask_ptr, bitmask_on_ptr, out_ptr,
    # sizes
    vocab, stride_logits, stride_bitmask, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (row, block): logits[row, block*BLOCK ...]
    row = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    valid = offs < vocab
    x = tl.load(logits_ptr + row.to(tl.int64) * stride_logits + offs, mask=valid).to(tl.float32)
    if tl.load(bitmask_on_ptr + row) != 0:
        words = tl.load(bitmask_ptr + row.to(tl.int64) * stride_bitmask + offs // 32, mask=valid, other=0)
        allowed = ((words >> (offs % 32)) & 1) != 0
        x = tl.where(allowed, x, float("-inf"))
    tl.store(out_ptr + row.to(tl.int64) * stride_out + offs, x, mask=valid)


@triton.jit
def edit_kernel(
    # pointers
    index_ptr, values_ptr, out_ptr,
    # sizes
    num_edits, rows, vocab, stride_out,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program i: edits i*BLOCK ...; entries outside [0, rows) x [0, vocab) are padding
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    live = offs < num_edits
    r = tl.load(index_ptr + offs * 2, mask=live, other=-1)
    t = tl.load(index_ptr + offs * 2 + 1, mask=live, other=-1)
    live = live & (r >= 0) & (r < rows) & (t >= 0) & (t < vocab)
    scale = tl.load(values_ptr + offs * 3, mask=live, other=1.0)
    bias = tl.load(values_ptr + offs * 3 + 1, mask=live, other=0.0)
    add = tl.load(values_ptr + offs * 3 + 2, mask=live, other=0.0)
    ptrs = out_ptr + r.to(tl.int64) * stride_out + t
    x = tl.load(ptrs, mask=live, other=0.0) + bias
    x = tl.where(x > 0, x / scale, x * scale) + add
    tl.store(ptrs, x, mask=live)


def _supported(logits, edit_index, edit_values, allowed_bitmask, bitmask_on) -> bool:
    return (logits.dim() == 2 and logits.stride(1) == 1 and edit_index.is_contiguous() and edit_values.is_contiguous()
            and allowed_bitmask.stride(1) == 1 and edit_index.shape[0] == edit_values.shape[0]
            and allowed_bitmask.shape == (logits.shape[0], triton.cdiv(logits.shape[1], 32)))


@OPS["edit_logits"].register_impl("triton", targets=GPU_TARGETS, launches=True, supports_args=_supported)
def edit_logits_triton(logits, edit_index, edit_values, allowed_bitmask, bitmask_on):
    # grid (rows, vocab blocks of 1024) to copy and mask; then (edit blocks of 256,) to scatter
    rows, vocab = logits.shape
    num_edits = edit_index.shape[0]
    launches = [
        Launch(mask_copy_kernel, grid=(rows, triton.cdiv(vocab, 1024)),
               args=(logits, allowed_bitmask, bitmask_on, Out(0), vocab, logits.stride(0), allowed_bitmask.stride(0),
                     vocab),
               constexprs={"BLOCK": 1024}, num_warps=4),
    ]
    if num_edits:
        launches.append(Launch(edit_kernel, grid=(triton.cdiv(num_edits, 256),),
                               args=(edit_index, edit_values, Out(0), num_edits, rows, vocab, vocab),
                               constexprs={"BLOCK": 256}, num_warps=4))
    return launches
