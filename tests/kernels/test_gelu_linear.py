"""`gelu_tanh_mul_linear`: the linear kernels with the GeGLU activation taken from the op, against native."""

from harness import parametrize, run
from test_fused_linear import DTYPES, SHAPES, _gated_args
from test_linear import small_blocks
from tolerances import assert_close

from llmc.aot.ir import OPS


@parametrize("gelu_tanh_mul_linear", _gated_args, dtype=DTYPES, m=[1, 3, 17], nk=SHAPES, has_bias=[False, True])
def test_gelu_tanh_mul_linear(provider, dtype, m, nk, has_bias):
    args = _gated_args(dtype, m, nk, has_bias)
    want = OPS["gelu_tanh_mul_linear"].native(*args)
    assert_close(run("gelu_tanh_mul_linear", provider, *args), want, dtype, provider)


@parametrize("gelu_tanh_mul_linear", lambda dtype, m: _gated_args(dtype, m, (144, 80), True), dtype=DTYPES, m=[1, 5])
def test_gelu_tanh_mul_linear_k_loop(provider, dtype, m):
    args, small = _gated_args(dtype, m, (144, 80), True), small_blocks(provider)
    want = OPS["gelu_tanh_mul_linear"].native(*args)
    assert_close(run("gelu_tanh_mul_linear", provider, *args, **small), want, dtype, f"{provider} {small}")


def test_the_activation_comes_from_the_op():
    args = _gated_args(DTYPES[0], 1, SHAPES[0], False)
    (silu,) = OPS["silu_mul_linear"].impls["triton_gemv"].fn(*args)
    (gelu,) = OPS["gelu_tanh_mul_linear"].impls["triton_gemv"].fn(*args)
    assert silu.constexprs["GATED"] != gelu.constexprs["GATED"]
