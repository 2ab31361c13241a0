"""The kernel of the GPU all_gather: NCCL's rank-major [W, R, n] -> the columns [R, W * n] the native op returns."""

import pytest
import torch
from interpreter import interpreter

from llmc.kernels.collective import rank_columns
from llmc.kernels.launch import resolve


@pytest.mark.parametrize("world, rows, cols", [(2, 1, 106), (4, 3, 53), (2, 5, 1500), (8, 2, 7)])
def test_rank_columns_orders_the_gathered_slices_by_rank(world, rows, cols):
    parts = [torch.randn(rows, cols) for _ in range(world)]
    gathered = torch.stack(parts)  # what ncclAllGather leaves: rank r's [R, n] at r
    out = torch.full((rows, world * cols), float("nan"))
    launch = rank_columns(gathered, out, world)
    with interpreter():
        launch.kernel[launch.grid3](*(resolve(a, []) for a in launch.args), **launch.constexprs, num_warps=launch.num_warps)
    assert torch.equal(out, torch.cat(parts, dim=-1))
