"""The FP8 linear kernels on a real GPU at Llama-3.1-8B shapes: what the interpreter cannot check.

Triton's interpreter has no FP8 tensor cores (tests/kernels/test_fp8_linear.py widens e4m3 dots
to float32 there), so `triton_fp8_*` meet `tl.dot` of e4m3 operands, and `cvt.rn.satfinite`, only
here. Each impl is compiled by Triton's JIT and compared with the op's native function on the same
CUDA tensors; a decode GEMV's bandwidth is printed (the GPU issue measures it against its floor).
"""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "kernels"))
from harness import parametrize  # noqa: E402
from test_kernels_gpu import compiled_kernels, run  # noqa: E402,F401  (autouse: skips when interpreted)

from llmc.aot.ir import OPS  # noqa: E402

pytestmark = pytest.mark.gpu

# Llama-3.1-8B: (N, K) of each linear
SHAPES = {"qkv_proj": (6144, 4096), "o_proj": (4096, 4096), "gate_up_proj": (28672, 4096), "down_proj": (4096, 14336)}
GROUPS = (0, 128)  # per-channel weights with per-token activations; 128 x 128 blocks with 1 x 128 groups


def fp8_args(layer, m, group, device="meta"):
    n, k = SHAPES[layer]
    scales = (n, -(-k // group) if group else 1)
    if device == "meta":
        weight = torch.empty((n, k), dtype=torch.float8_e4m3fn, device=device)
        return torch.empty((m, k), dtype=torch.bfloat16, device=device), weight, torch.empty(scales, device=device), None, group
    weight = (torch.randn((n, k), device=device) * 64).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale = torch.rand(scales, device=device) * 1e-3 / k**0.5 + 1e-5
    return torch.randn((m, k), device=device).to(torch.bfloat16), weight, scale, None, group


def assert_close(got, want, what):
    # a whole-tensor bound: an activation element may round to the neighbouring e4m3 value where the
    # GPU's exp/rsqrt differ from torch's by an ulp, moving its row's output by one e4m3 step of one term
    err = (got.float() - want.float()).abs().max().item()
    assert torch.isfinite(got).all(), f"{what}: NaN or inf (unwritten output?)"
    assert err <= 1e-2 * want.float().abs().max().item() + 1e-3, f"{what}: max error {err:.3g}"


@parametrize("fp8_linear", fp8_args, layer=list(SHAPES), m=[1, 8, 512], group=GROUPS)
def test_fp8_linear(provider, layer, m, group):
    torch.manual_seed(0)
    args = fp8_args(layer, m, group, "cuda")
    assert_close(run(provider, "fp8_linear", args), OPS["fp8_linear"].native(*args), f"{provider} {layer} m={m}")


def norm_args(m, group, device="meta"):
    x, weight, scale, bias, group = fp8_args("qkv_proj", m, group, device)
    make = torch.empty if device == "meta" else torch.randn
    norm_w = make((4096,), device=device).to(torch.bfloat16)
    return x, make((m, 4096), device=device).to(torch.bfloat16), norm_w, 1e-6, weight, scale, bias, group


@parametrize("fp8_norm_linear", norm_args, m=[1, 512], group=GROUPS)
def test_fp8_norm_linear(provider, m, group):
    torch.manual_seed(0)
    args = norm_args(m, group, "cuda")
    out, summed = run(provider, "fp8_norm_linear", args)
    want, want_summed = OPS["fp8_norm_linear"].native(*args)
    assert torch.equal(summed, want_summed)
    assert_close(out, want, f"{provider} m={m}")


def gated_args(m, group, device="meta"):
    x, weight, scale, bias, group = fp8_args("down_proj", m, group, device)
    gate_up = torch.empty((m, 2 * 14336), dtype=torch.bfloat16, device=device)
    if device != "meta":
        gate_up = torch.randn((m, 2 * 14336), device=device).to(torch.bfloat16)
    return gate_up, weight, scale, bias, group


@parametrize("fp8_silu_mul_linear", gated_args, m=[1, 512], group=GROUPS)
def test_fp8_silu_mul_linear(provider, m, group):
    torch.manual_seed(0)
    args = gated_args(m, group, "cuda")
    assert_close(run(provider, "fp8_silu_mul_linear", args), OPS["fp8_silu_mul_linear"].native(*args), f"{provider} m={m}")
