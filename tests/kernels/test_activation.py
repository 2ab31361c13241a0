"""silu_and_mul: every provider against the native function."""

import pytest
import torch

from harness import providers, run
from tolerances import assert_close

from llmc.aot.ir import OPS


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(100) on purpose
@pytest.mark.parametrize("provider", providers("silu_and_mul"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens, width", [(1, 96), (3, 80), (7, 200), (2, 3000)])
def test_silu_and_mul(provider, dtype, tokens, width):
    g = torch.Generator().manual_seed(tokens * width)
    x = (torch.randn(tokens, 2 * width, generator=g) * 4).to(dtype)
    x[0, :4] = torch.tensor([-100.0, 100.0, 0.0, -20.0]).to(dtype)  # exp overflow and the origin
    out = run("silu_and_mul", provider, x)
    assert_close(out, OPS["silu_and_mul"].native(x), dtype, f"silu_and_mul {provider} [{tokens}, {2 * width}]")
