"""quantize_fp8 per row (the build's path for every linear weight) against the grouped path with one
group as wide as the row: the same bytes, the input untouched, and the scales alone the same."""

import torch

from llmc.aot.ir.ops.fp8 import quantize_fp8, row_scales_fp8


def test_per_row_quantization_is_the_grouped_one_with_one_group():
    torch.manual_seed(0)
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(33, 200, dtype=dtype) * torch.logspace(-3, 3, 33, dtype=torch.float32)[:, None].to(dtype)
        x[5] = 0  # an all-zero row gets the minimum scale, not 0
        before = x.clone()
        q, scale = quantize_fp8(x, 0)
        q_wide, scale_wide = quantize_fp8(x, 200)
        assert torch.equal(x, before)
        assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape and scale.shape == (33, 1)
        assert torch.equal(q.view(torch.uint8), q_wide.view(torch.uint8))
        assert torch.equal(scale, scale_wide)
        assert torch.equal(row_scales_fp8(x), scale)
