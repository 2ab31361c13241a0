"""Collectives on GPUs: one NCCL call each (a `Collective` step the runtime makes through nccl4py), and for
all_gather the kernel that turns NCCL's rank-major result [W, R, n] into the columns [R, W * n]."""

import triton
import triton.language as tl

from llmc.aot.ir import OPS
from llmc.aot.ir.ops.collective import Collective
from llmc.kernels.launch import Launch, Out
from llmc.kernels.targets import GPU_TARGETS


@triton.jit
def rank_columns_kernel(
    # pointers
    gathered_ptr, out_ptr,
    # sizes
    rows, cols, world,
    # meta-parameters
    BLOCK: tl.constexpr,
):
    # program (w * rows + r, c): columns c*BLOCK ... of rank w's row r -> out[r, w * cols + ...]
    pid = tl.program_id(0)
    rank, row = pid // rows, pid % rows
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < cols
    x = tl.load(gathered_ptr + pid.to(tl.int64) * cols + offs, mask=mask)
    tl.store(out_ptr + row.to(tl.int64) * cols * world + rank * cols + offs, x, mask=mask)


def rank_columns(gathered, out, world: int) -> Launch:
    _, rows, cols = gathered.shape
    block = min(triton.next_power_of_2(cols), 1024)
    return Launch(rank_columns_kernel, grid=(world * rows, triton.cdiv(cols, block)), args=(gathered, out, rows, cols, world),
                  constexprs={"BLOCK": block}, num_warps=4)


@OPS["all_reduce"].register_impl("nccl", targets=GPU_TARGETS, launches=True)
def all_reduce_nccl(x):
    # ncclAllReduce(sum) from x's buffer into the output's
    return [Collective("all_reduce", x, Out(0))]


@OPS["all_gather"].register_impl("nccl", targets=GPU_TARGETS, launches=True,
                                 supports_args=lambda x, world_size: x.dim() == 2 and x.is_contiguous())
def all_gather_nccl(x, world_size):
    # ncclAllGather of [R, n] into [W, R, n] (scratch), then its columns into [R, W * n]
    gathered = x.new_empty((world_size, *x.shape))
    return [Collective("all_gather", x, gathered), rank_columns(gathered, Out(0), world_size)]


@OPS["all_reduce_add_rms_norm"].register_impl(
    "nccl", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, residual, weight, eps: OPS["fused_add_rms_norm"].impls["triton"].supports(x, residual, weight, eps),
)
def all_reduce_add_rms_norm_nccl(x, residual, weight, eps):
    # ncclAllReduce of x into a scratch buffer, then the add + norm kernel reads the sum from there
    reduced = x.new_empty(x.shape)
    return [Collective("all_reduce", x, reduced), *OPS["fused_add_rms_norm"].impls["triton"].fn(reduced, residual, weight, eps)]
