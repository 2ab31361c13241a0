"""fuse_all_reduce_norm: an all-reduce whose sum is added to the residual and normalised becomes one step, and only
where no linear's prologue already reads the sum; the result is unchanged."""

from __future__ import annotations

import torch

import llmc.aot.ir.ops  # noqa: F401  (registers the ops)
from llmc.aot.ir import op_of
from llmc.aot.passes import run_passes

ops = torch.ops.llmc


def _ops(gm) -> list[str]:
    return [op_of(n.target).name for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target)]


def _graph():
    from llmc.aot.model import _Builder

    b = _Builder()
    r, part = b.placeholder("input:r"), b.placeholder("input:part")
    w_norm, w_lin, w_final = (b.placeholder(f"weight:{n}") for n in ("post.weight", "lin.weight", "norm.weight"))
    h = ops.add(ops.all_reduce(part), r)            # a row-parallel output plus the residual
    y = ops.linear(ops.rms_norm(h, w_norm, 1e-6), w_lin, None)  # ... normalised into a linear: norm_linear's
    h2 = ops.add(ops.all_reduce(y), h)
    out = ops.rms_norm(h2, w_final, 1e-6)          # ... normalised for the LM head: this pass's
    b.graph.output((out.node, h2.node))
    return torch.fx.GraphModule(torch.nn.Module(), b.graph)


def test_it_adds_one_fused_step_and_removes_the_all_reduce_and_add_norm():
    gm = _graph()
    params = {"post.weight": torch.rand(8) + 0.5, "lin.weight": torch.randn(8, 8), "norm.weight": torch.rand(8) + 0.5}
    args = (torch.randn(3, 8), torch.randn(3, 8), params["post.weight"], params["lin.weight"], params["norm.weight"])
    before = gm(*args)
    log = run_passes(gm, dict(params))
    assert sorted(_ops(gm)) == ["all_reduce", "all_reduce_add_rms_norm", "norm_linear"]
    assert sum(line.startswith("fused_add_rms_norm(all_reduce(x), r) -> all_reduce_add_rms_norm(x, r): ") for line in log) == 1
    assert "stage fuse_all_reduce_norm: 1 rewrites" in " ".join(log)
    after = gm(*args)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b)


def test_a_single_rank_graph_is_left_alone():
    from llmc.aot.model import _Builder

    b = _Builder()
    h, r, w = b.placeholder("input:h"), b.placeholder("input:r"), b.placeholder("weight:norm.weight")
    b.graph.output(ops.rms_norm(ops.add(h, r), w, 1e-6).node)
    gm = torch.fx.GraphModule(torch.nn.Module(), b.graph)
    log = run_passes(gm, {"norm.weight": torch.ones(4)})
    assert _ops(gm) == ["fused_add_rms_norm"] and "stage fuse_all_reduce_norm: 0 rewrites, 0 dead nodes removed" in log
