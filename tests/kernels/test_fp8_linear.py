"""The FP8 linears: every kernel impl against the native function, through Triton's interpreter.

Triton 3.7's interpreter gets two FP8 things wrong, which `fp8_interpreter()` corrects for the
block (as tests/kernels/interpreter.py corrects bfloat16):
- float32 -> e4m3 does not round to nearest even (ties and subnormals go astray), where the GPU's
  cvt.rn.satfinite and torch do;
- tl.dot of e4m3 operands returns NaN: the operands are widened to float32 first, which is exact
  (every e4m3 value is a float32), so the product is the one FP8 tensor cores compute up to the
  float32 accumulation order.
So for `triton_fp8_*` the interpreter checks the kernel's indexing, masks, scales and quantizer,
not the FP8 MMA instruction: tests/gpu/test_fp8_kernels_gpu.py runs them on the GPU.
"""

import contextlib

import numpy as np
import torch
import triton.language as tl
from harness import parametrize, run
from tolerances import assert_close
from triton.runtime import interpreter as ti

from llmc.aot.ir import OPS

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (N, K, group_size, bias): per-token and per-group scales, several K steps, partial ones
SHAPES = [(24, 48, 0, False), (40, 200, 0, True), (56, 80, 16, True), (48, 96, 32, False)]
FUSED_SHAPES = [(40, 200, 0, False), (56, 80, 16, False)]


@contextlib.contextmanager
def fp8_interpreter():
    builder = ti.InterpreterBuilder
    cast, dot = builder.create_fp_to_fp, builder.create_dot

    def rounding_cast(self, src, dst_type, rounding_mode):
        if dst_type.scalar == tl.float8e4nv and src.dtype.scalar == tl.float32:
            data = torch.from_numpy(np.ascontiguousarray(src.data, dtype=np.float32))
            return ti.TensorHandle(data.to(torch.float8_e4m3fn).view(torch.uint8).numpy(), dst_type.scalar)
        return cast(self, src, dst_type, rounding_mode)

    def widening_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        def widen(t):
            if t.dtype.scalar != tl.float8e4nv:
                return t
            data = torch.from_numpy(np.ascontiguousarray(t.data)).view(torch.float8_e4m3fn).float().numpy()
            return ti.TensorHandle(data, tl.float32)

        return dot(self, widen(a), widen(b), d, "ieee", max_num_imprecise_acc)

    builder.create_fp_to_fp, builder.create_dot = rounding_cast, widening_dot
    try:
        yield
    finally:
        builder.create_fp_to_fp, builder.create_dot = cast, dot


def make(shape, dtype, seed, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


def fp8_weight(n, k, group, seed):
    weight = make((n, k), torch.float32, seed, 100.0).clamp(-448, 448).to(torch.float8_e4m3fn)
    scale = make((n, -(-k // group) if group else 1), torch.float32, seed + 1).abs() / 1000 + 1e-4
    return weight, scale


def _linear_args(dtype, m, shape):
    n, k, group, has_bias = shape
    weight, scale = fp8_weight(n, k, group, 2)
    x = make((m, k), dtype, 1, 2.0)
    return x, weight, scale, make((n,), dtype, 3) if has_bias else None, group


def _norm_args(dtype, m, shape, has_residual):
    n, k, group, _ = shape
    weight, scale = fp8_weight(n, k, group, 4)
    residual = make((m, k), dtype, 5) if has_residual else None
    norm_weight = (torch.rand(k, generator=torch.Generator().manual_seed(6)) + 0.5).to(dtype)
    return make((m, k), dtype, 7), residual, norm_weight, 1e-6, weight, scale, None, group


def _gated_args(dtype, m, shape):
    n, k, group, _ = shape
    weight, scale = fp8_weight(n, k, group, 8)
    return make((m, 2 * k), dtype, 9, 2.0), weight, scale, None, group


def _run(op, provider, *args):
    with fp8_interpreter():
        return run(op, provider, *args)


@parametrize("fp8_linear", _linear_args, dtype=DTYPES, m=[1, 5, 40], shape=SHAPES)
def test_fp8_linear(provider, dtype, m, shape):
    args = _linear_args(dtype, m, shape)
    assert_close(_run("fp8_linear", provider, *args), OPS["fp8_linear"].native(*args), dtype, provider)


@parametrize("fp8_norm_linear", _norm_args, dtype=(torch.float32, torch.bfloat16), m=[1, 33], shape=FUSED_SHAPES,
             has_residual=[False, True])
def test_fp8_norm_linear(provider, dtype, m, shape, has_residual):
    args = _norm_args(dtype, m, shape, has_residual)
    out, summed = _run("fp8_norm_linear", provider, *args)
    want, want_summed = OPS["fp8_norm_linear"].native(*args)
    assert torch.equal(summed, want_summed), f"{provider}: summed rows differ"
    assert_close(out, want, dtype, provider)


@parametrize("fp8_silu_mul_linear", _gated_args, dtype=(torch.float32, torch.bfloat16), m=[1, 33], shape=FUSED_SHAPES)
def test_fp8_silu_mul_linear(provider, dtype, m, shape):
    args = _gated_args(dtype, m, shape)
    assert_close(_run("fp8_silu_mul_linear", provider, *args), OPS["fp8_silu_mul_linear"].native(*args), dtype, provider)
