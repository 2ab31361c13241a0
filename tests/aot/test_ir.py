"""The IR: registry, schema checks, priorities, supports_args fallback, recorded lowering."""

import pytest
import torch
import torch.fx

from llmc.aot.ir import OPS, SchemaMismatch, op_of, register_op
from llmc.aot.lower import choose_impl
from llmc.aot.target import TARGETS, parse_op_priority
from llmc.errors import UserError


@register_op
def _test_scale(x: torch.Tensor, factor: float) -> torch.Tensor:
    return x * factor


@_test_scale.register_impl("small_only", targets=("sm90",), supports_args=lambda x, factor: x.shape[0] <= 4,
                           launches=True)
def _small(x, factor):
    return x * factor


@_test_scale.register_impl("anywhere", targets=("sm90", "sm80"), launches=True)
def _anywhere(x, factor):
    return x * factor


def _node(x_rows: int):
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    node = graph.call_function(torch.ops.llmc._test_scale, (x, 2.0))
    return node, (torch.empty(x_rows, 3, device="meta"), 2.0)


def test_op_is_a_torch_custom_op_whose_native_is_the_semantics():
    x = torch.randn(3, 5)
    assert torch.equal(torch.ops.llmc._test_scale(x, 2.0), x * 2.0)
    assert op_of(torch.ops.llmc._test_scale) is OPS["_test_scale"]
    assert "native" in OPS["_test_scale"].impls


def test_every_family_op_is_registered():
    needed = {"embedding", "rms_norm", "fused_add_rms_norm", "linear", "rotary_embedding", "head_rms_norm",
              "kv_cache_write", "paged_attention", "silu_and_mul", "lm_head", "sample"}
    assert needed <= set(OPS)


def test_schema_mismatch_is_rejected_at_registration():
    with pytest.raises(SchemaMismatch, match="takes"):
        @OPS["_test_scale"].register_impl("wrong")
        def _wrong(x, scale):  # the op calls it factor
            return x

    with pytest.raises(SchemaMismatch):
        OPS["_test_scale"].register_impl("bad_supports", supports_args=lambda x: True)(lambda x, factor: x)


def test_priority_order_wins_and_rejections_are_recorded():
    node, args = _node(2)
    choice = choose_impl(node, args, TARGETS["sm90"], {"_test_scale": ("small_only", "anywhere")})
    assert choice.impl.provider == "small_only"
    assert "lower priority" in choice.rejected["anywhere"]
    choice = choose_impl(node, args, TARGETS["sm90"], {"_test_scale": ("anywhere", "small_only")})
    assert choice.impl.provider == "anywhere"


def test_supports_args_falls_back_to_the_next_impl():
    node, args = _node(64)
    choice = choose_impl(node, args, TARGETS["sm90"], {"_test_scale": ("small_only", "anywhere")})
    assert choice.impl.provider == "anywhere"
    assert choice.rejected["small_only"] == "does not support these argument shapes"


def test_targets_limit_availability():
    node, args = _node(2)
    choice = choose_impl(node, args, TARGETS["sm80"], {"_test_scale": ("small_only", "anywhere")})
    assert choice.impl.provider == "anywhere"
    assert choice.rejected["small_only"] == "not available on sm80"


def test_no_native_on_gpu_even_when_asked():  # the GPU runtimes run launches only
    node, args = _node(2)
    with pytest.raises(UserError, match="no impl for gfx942"):
        choose_impl(node, args, TARGETS["gfx942"], {})
    with pytest.raises(UserError, match="native: launches no kernel, and the hip runtime for gfx942 runs kernels only"):
        choose_impl(node, args, TARGETS["gfx942"], {"_test_scale": ("native",)})
    assert choose_impl(node, args, TARGETS["cpu"], {}).impl.provider == "native"


def test_op_priority_parsing():
    assert parse_op_priority("rms_norm=native, linear=triton_gemm|native") == {
        "rms_norm": ("native",), "linear": ("triton_gemm", "native")}
    for bad in ("rms_norm", "nope=native", "rms_norm=nope"):
        with pytest.raises(UserError):
            parse_op_priority(bad)
