"""`norm_linear` and the gated linears (`silu_mul_linear`, `gelu_tanh_mul_linear`): the linear
kernels with the RMS norm or the gated activation, taken from the op, folded into their A operand.

The prologue fusion pays off for a single row (decode at batch 1), where removing a launch
matters most; for more rows the norm or activation runs first into a scratch buffer, then the
plain product, which measured faster on the H100 (a fused M=8 GEMV was several times slower).
"""

from dataclasses import replace

import torch

from llmc.aot.ir import OPS
from llmc.kernels.launch import Out
from llmc.kernels.linear import GEMM_CONFIGS, GEMV_MAX_ROWS, WGMMA_CONFIGS, Prologue, _gemm, _gemv, _wgmma_ok, gated
from llmc.kernels.targets import GPU_TARGETS


def _scratch(x, cols: int):
    """A temporary [rows, cols] buffer: a tensor that is neither an argument nor an output of the op,
    which the planner places in the arena for the node's lifetime (and a test allocates for real)."""
    return torch.empty((x.shape[0], cols), dtype=x.dtype, device=x.device)


def _retarget(launches, outputs: dict):
    """Another op's launches with its outputs Out(i) sent to outputs[i]."""
    return [replace(l, args=tuple(outputs[a.index] if isinstance(a, Out) else a for a in l.args)) for l in launches]


def _norm_first(x, residual, norm_weight, eps):
    """Launches that write rms_norm(x [+ residual]) to a scratch buffer and the sum to Out(1)."""
    normed = _scratch(x, x.shape[1])
    if residual is None:
        norm = _retarget(OPS["rms_norm"].impls["triton"].fn(x, norm_weight, eps), {0: normed})
        copy = _retarget(OPS["split"].impls["triton"].fn(x, [x.shape[1]]), {0: Out(1)})
        return normed, norm + copy
    return normed, _retarget(OPS["fused_add_rms_norm"].impls["triton"].fn(x, residual, norm_weight, eps),
                             {0: normed, 1: Out(1)})


def _act_first(op: str, x):
    """Launches that write the gated activation `op` of x to a scratch buffer."""
    act = _scratch(x, x.shape[1] // 2)
    return act, _retarget(OPS[op].impls["triton"].fn(x), {0: act})


def _norm_ok(x, residual, norm_weight, weight):
    k = weight.shape[1]
    return x.shape[1] == k and norm_weight.shape == (k,) and (residual is None or residual.shape == x.shape)


def _norm(residual, norm_weight, eps):
    return Prologue(norm_weight=norm_weight, residual=residual, eps=eps)


@OPS["norm_linear"].register_impl(
    "triton_gemv", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, residual, norm_weight, eps, weight, bias: x.shape[0] <= GEMV_MAX_ROWS
    and _norm_ok(x, residual, norm_weight, weight),
)
def norm_linear_gemv(x, residual, norm_weight, eps, weight, bias):
    if x.shape[0] == 1:
        return _gemv(x, weight, bias, None, 1, _norm(residual, norm_weight, eps))
    normed, first = _norm_first(x, residual, norm_weight, eps)
    return first + _gemv(normed, weight, bias, None, x.shape[0])


@OPS["norm_linear"].register_impl(
    "triton_gemm", targets=GPU_TARGETS, launches=True,
    supports_args=lambda x, residual, norm_weight, eps, weight, bias: _norm_ok(x, residual, norm_weight, weight),
)
def norm_linear_gemm(x, residual, norm_weight, eps, weight, bias):
    normed, first = _norm_first(x, residual, norm_weight, eps)
    return first + _gemm(normed, weight, bias, None, x.shape[0], GEMM_CONFIGS)


@OPS["norm_linear"].register_impl(
    "triton_wgmma", targets=("sm90",), launches=True,
    supports_args=lambda x, residual, norm_weight, eps, weight, bias: _wgmma_ok(x, weight, x.shape[0])
    and _norm_ok(x, residual, norm_weight, weight),
)
def norm_linear_wgmma(x, residual, norm_weight, eps, weight, bias):
    normed, first = _norm_first(x, residual, norm_weight, eps)
    return first + _gemm(normed, weight, bias, None, x.shape[0], WGMMA_CONFIGS)


def _gated_ok(x, weight, bias):
    return x.shape[1] == 2 * weight.shape[1]


def _register_gated(fused: str, act: str) -> None:
    """The three linear impls of `fused` = linear(act(x), W, b), the activation taken from the op `act`."""

    @OPS[fused].register_impl(
        "triton_gemv", targets=GPU_TARGETS, launches=True,
        supports_args=lambda x, weight, bias: x.shape[0] <= GEMV_MAX_ROWS and _gated_ok(x, weight, bias),
    )
    def gemv(x, weight, bias):
        if x.shape[0] == 1:
            return _gemv(x, weight, bias, None, 1, gated(act))
        out, first = _act_first(act, x)
        return first + _gemv(out, weight, bias, None, x.shape[0])

    @OPS[fused].register_impl("triton_gemm", targets=GPU_TARGETS, launches=True, supports_args=_gated_ok)
    def gemm(x, weight, bias):
        out, first = _act_first(act, x)
        return first + _gemm(out, weight, bias, None, x.shape[0], GEMM_CONFIGS)

    @OPS[fused].register_impl(
        "triton_wgmma", targets=("sm90",), launches=True,
        supports_args=lambda x, weight, bias: _wgmma_ok(x, weight, x.shape[0]) and _gated_ok(x, weight, bias),
    )
    def wgmma(x, weight, bias):
        out, first = _act_first(act, x)
        return first + _gemm(out, weight, bias, None, x.shape[0], WGMMA_CONFIGS)


_register_gated("silu_mul_linear", "silu_and_mul")
_register_gated("gelu_tanh_mul_linear", "gelu_tanh_and_mul")
