"""Column concatenation and split: one copy launch per input (concat) or per output (split)."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def copy_columns_kernel(
    # pointers
    src_ptr, dst_ptr,
    # sizes
    n_cols, stride_src, stride_dst, src_col, dst_col,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (t, c): dst[t, dst_col + j] = src[t, src_col + j] for j in c*BLOCK ... (< n_cols)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(src_ptr + row * stride_src + src_col + cols, mask=mask)
    tl.store(dst_ptr + row * stride_dst + dst_col + cols, x, mask=mask)


def _copy(src, dst, rows, n_cols, stride_src, stride_dst, src_col, dst_col):
    # grid (rows, column blocks of up to 1024)
    block = min(triton.next_power_of_2(n_cols), 1024)
    return Launch(
        copy_columns_kernel,
        grid=(rows, triton.cdiv(n_cols, block)),
        args=(src, dst, n_cols, stride_src, stride_dst, src_col, dst_col),
        constexprs={"BLOCK": block},
        num_warps=4,
    )


@OPS["concat"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda tensors: len(tensors) >= 1 and all(
        t.dim() == 2 and t.stride(1) == 1 and t.shape[0] == tensors[0].shape[0] and t.shape[1] > 0
        and t.dtype == tensors[0].dtype for t in tensors),
)
def concat_triton(tensors):
    # input i goes to columns [sum of earlier widths, + its width) of the output
    rows, width = tensors[0].shape[0], sum(t.shape[1] for t in tensors)
    starts = [sum(t.shape[1] for t in tensors[:i]) for i in range(len(tensors))]
    return [_copy(t, Out(0), rows, t.shape[1], t.stride(0), width, 0, start) for t, start in zip(tensors, starts)]


@OPS["split"].register_impl(
    "triton", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, sizes: x.dim() == 2 and x.stride(1) == 1 and sum(sizes) == x.shape[1]
    and all(s > 0 for s in sizes),
)
def split_triton(x, sizes):
    # output i takes columns [sum of earlier sizes, + sizes[i]) of x
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    return [_copy(x, Out(i), x.shape[0], s, x.stride(0), s, start, 0) for i, (s, start) in enumerate(zip(sizes, starts))]
