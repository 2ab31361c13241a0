"""The FP8 rewrite rules on hand-made graphs: each rule's whole effect (the op it makes, its arguments,
the weights it adds and the uses it rewires), where it must not fire, and the rewritten graph computing
what the graph before it did. tests/aot/test_fp8_passes.py runs the same rules on traced models."""

import torch
from llmc.aot.fp8_weights import ScaleWeight
from llmc.aot.ir import op_of
from llmc.aot.passes import fp8_linears
from llmc.aot.passes.dce import eliminate_dead_code
from llmc.aot.passes.rewrite import (
    PassContext,
    add_weight,
    apply_rules,
    call,
    is_getitem,
    is_op,
    item,
    weight_name,
)
from llmc.aot.weights import load

H, EPS = 64, 1e-6


class _Model:
    """A graph over input x [T, H] and the PassContext holding its weights."""

    def __init__(self):
        self.graph, self.ctx = torch.fx.Graph(), PassContext({})
        self.x = self.graph.placeholder("x")
        self.out = self.graph.output(None)
        self.g = torch.Generator().manual_seed(0)

    def weight(self, name, tensor):
        return add_weight(self.graph, self.ctx, name, tensor)

    def fp8(self, name, rows, group, cols=H, bias=False):
        """(W8, scale, bias or None) placeholders of an FP8 linear `name` ([rows, cols], block size `group`)."""
        w8 = (torch.randn(rows, cols, generator=self.g) * 100).to(torch.float8_e4m3fn)
        blocks = -(-cols // group) if group else 1
        s = torch.rand(rows, blocks, generator=self.g) / 100 + 1e-3
        scale = ScaleWeight((rows, blocks), torch.float32, lambda s=s: s, f"{name} scale", group_size=group)
        b = self.weight(f"{name}.bias", torch.randn(rows, generator=self.g)) if bias else None
        return self.weight(f"{name}.weight", w8), self.weight(f"{name}.weight_scale", scale), b

    def norm(self, name):
        return self.weight(name, torch.rand(H, generator=self.g) + 0.5)

    def build(self, make):
        """Put `make()`'s nodes before the output, which returns them."""
        with self.graph.inserting_before(self.out):
            nodes = make()
        self.out.args = (nodes,)
        self.gm = torch.fx.GraphModule(torch.nn.Module(), self.graph)
        return nodes

    def run(self, x):
        args = [x if n is self.x else load(self.ctx.params[weight_name(n)]) for n in self.graph.nodes if n.op == "placeholder"]
        self.gm.recompile()
        return self.gm(*args)

    def ops(self):
        return [op_of(n.target).name for n in self.graph.nodes if n.op == "call_function" and not is_getitem(n)]


def _x(m, width=H):
    return torch.randn(5, width, generator=m.g)


def _same(before, after):
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# -- linear(x, W8) -> fp8_linear(x, W8, s) ------------------------------------------------------


def test_a_linear_over_a_weight_with_a_scale_becomes_fp8_linear_with_its_group():
    m = _Model()
    w, s, b = m.fp8("layers.0.q_proj", 32, 32, bias=True)
    w16 = m.weight("layers.0.k_proj.weight", torch.randn(16, H))  # left 16-bit: no scale beside it
    m.build(lambda: (call(m.graph, "linear", m.x, w, b, name="layers_0_q_proj"),
                     call(m.graph, "linear", m.x, w16, None, name="layers_0_k_proj")))
    assert apply_rules(m.gm, fp8_linears.TO_FP8, m.ctx) == 1
    q, k = m.out.args[0]
    assert is_op(q, "fp8_linear") and q.args == (m.x, w, s, b, 32) and q.name == "layers_0_q_proj"
    assert is_op(k, "linear") and k.args == (m.x, w16, None)
    assert m.ctx.log == ["linear(x, W8) -> fp8_linear(x, W8, s): layers_0_q_proj"]


def test_a_per_channel_scale_gives_group_0_and_a_scale_of_another_weight_is_not_taken():
    m = _Model()
    w, s, _ = m.fp8("layers.0.o_proj", 16, 0)
    lone = m.weight("layers.0.down_proj.weight", torch.randn(16, H))
    m.weight("layers.0.down.weight_scale", torch.ones(16, 1))  # named for another weight
    m.build(lambda: (call(m.graph, "linear", m.x, w, None), call(m.graph, "linear", m.x, lone, None)))
    assert apply_rules(m.gm, fp8_linears.TO_FP8, m.ctx) == 1
    o, down = m.out.args[0]
    assert o.args == (m.x, w, s, None, 0) and is_op(down, "linear")


# -- fp8_linear siblings merge, their scales and biases with them -------------------------------


def test_fp8_siblings_merge_rows_of_weights_scales_and_biases():
    m = _Model()
    parts = [m.fp8(f"layers.0.{p}_proj", rows, 32, bias=True) for p, rows in (("q", 32), ("k", 16), ("v", 16))]
    m.build(lambda: tuple(call(m.graph, "fp8_linear", m.x, w, s, b, 32) for w, s, b in parts))
    x = _x(m)
    before = m.run(x)
    assert apply_rules(m.gm, fp8_linears.MERGE, m.ctx) == 1
    _same(before, m.run(x))
    (merged,) = [n for n in m.graph.nodes if is_op(n, "fp8_linear")]
    assert merged.name == "layers_0_qkv_proj" and merged.args[0] is m.x and merged.args[4] == 32
    assert [weight_name(a) for a in merged.args[1:4]] == ["layers.0.qkv_proj.weight", "layers.0.qkv_proj.weight_scale",
                                                          "layers.0.qkv_proj.bias"]
    (split,) = merged.users
    assert is_op(split, "split") and split.args[1] == [32, 16, 16]
    for suffix in ("weight", "weight_scale", "bias"):
        whole = load(m.ctx.params[f"layers.0.qkv_proj.{suffix}"])
        assert torch.equal(whole, torch.cat([load(m.ctx.params[f"layers.0.{p}_proj.{suffix}"]) for p in "qkv"]))
    eliminate_dead_code(m.gm, m.ctx.params)
    assert sorted(m.ctx.params) == ["layers.0.qkv_proj.bias", "layers.0.qkv_proj.weight", "layers.0.qkv_proj.weight_scale"]


def test_two_biasless_per_channel_siblings_merge():
    m = _Model()
    parts = [m.fp8(f"layers.0.{p}_proj", 24, 0) for p in ("gate", "up")]
    m.build(lambda: tuple(call(m.graph, "fp8_linear", m.x, w, s, None, 0) for w, s, _ in parts))
    x = _x(m)
    before = m.run(x)
    assert apply_rules(m.gm, fp8_linears.MERGE, m.ctx) == 1
    _same(before, m.run(x))
    (merged,) = [n for n in m.graph.nodes if is_op(n, "fp8_linear")]
    assert merged.name == "layers_0_gate_up_proj" and merged.args[3] is None and merged.args[4] == 0
    assert "layers.0.gate_up_proj.bias" not in m.ctx.params
    assert m.ctx.log == ["fp8_linear(x, A), fp8_linear(x, B) -> split(fp8_linear(x, [A; B])): fp8_linear"]


def _pair(first, second):
    """Two fp8_linears over x from (weight, scale, bias, group) node makers; the rule's answer for each."""
    m = _Model()
    nodes = m.build(lambda: (call(m.graph, "fp8_linear", m.x, *first(m, "a")), call(m.graph, "fp8_linear", m.x, *second(m, "b"))))
    return [fp8_linears._merge_siblings(n, m.ctx) for n in reversed(nodes)][::-1]  # the second first: a merge erases it


def _plain(group=32, bias=False):
    def make(m, name):
        w, s, b = m.fp8(f"layers.0.{name}_proj", 16, group, bias=bias)
        return w, s, b, group
    return make


def _computed(index):
    """A sibling whose weight (1), scale (2) or bias (3) is computed in the graph, not a checkpoint tensor."""
    def make(m, name):
        args = [*m.fp8(f"layers.0.{name}_proj", 16, 32, bias=True), 32]
        args[index - 1] = call(m.graph, "split", args[index - 1], [1])
        return tuple(args)
    return make


def test_fp8_siblings_merge_only_when_alike():
    assert _pair(_plain(32), _plain(0)) == [None, None]  # block-wise and per-channel
    assert _pair(_plain(bias=True), _plain()) == [None, None]  # one with a bias, one without
    assert _pair(_plain(), _plain(bias=True)) == [None, None]
    for index in (1, 2, 3):
        assert _pair(_plain(bias=True), _computed(index)) == [None, None], index
    merged, second = _pair(_plain(), _plain())
    assert is_getitem(merged, 0) and second is None  # the group is merged from its first member only


def test_a_single_fp8_linear_or_a_plain_sibling_does_not_merge():
    m = _Model()
    w, s, _ = m.fp8("layers.0.q_proj", 16, 0)
    plain = m.weight("layers.0.k_proj.weight", torch.randn(16, H))
    node, _ = m.build(lambda: (call(m.graph, "fp8_linear", m.x, w, s, None, 0), call(m.graph, "linear", m.x, plain, None)))
    assert fp8_linears._merge_siblings(node, m.ctx) is None


# -- the norm and the gated activation become the activation quantizer's prologue ---------------


def test_an_fp8_linear_over_rms_norm_becomes_fp8_norm_linear():
    m = _Model()
    n = m.norm("layers.0.input_layernorm.weight")
    w, s, b = m.fp8("layers.0.qkv_proj", 48, 32, bias=True)
    m.build(lambda: call(m.graph, "fp8_linear", call(m.graph, "rms_norm", m.x, n, EPS), w, s, b, 32, name="layers_0_qkv_proj"))
    x = _x(m)
    before = m.run(x)
    assert apply_rules(m.gm, fp8_linears.PROLOGUE, m.ctx) == 1
    eliminate_dead_code(m.gm, m.ctx.params)
    _same([before], [m.run(x)])
    (new,) = [u for u in m.graph.nodes if is_op(u, "fp8_norm_linear")]
    assert new.args == (m.x, None, n, EPS, w, s, b, 32) and new.name == "layers_0_qkv_proj"
    assert is_getitem(m.out.args[0], 0) and m.out.args[0].args[0] is new
    assert m.ops() == ["fp8_norm_linear"]
    assert m.ctx.log == ["fp8_linear(rms_norm(x [+ r])) -> fp8_norm_linear(x, r): layers_0_qkv_proj"]


def test_an_fp8_linear_over_an_added_norm_takes_the_add_and_gives_the_sum():
    m = _Model()
    with m.graph.inserting_after(m.x):
        residual = m.graph.placeholder("residual")
    n, later = m.norm("layers.1.input_layernorm.weight"), m.norm("layers.1.post_attention_layernorm.weight")
    w, s, b = m.fp8("layers.1.qkv_proj", 32, 0, bias=True)

    def make():
        fused = call(m.graph, "fused_add_rms_norm", m.x, residual, n, EPS)
        normed, summed = item(m.graph, fused, 0), item(m.graph, fused, 1)
        reader = call(m.graph, "rms_norm", summed, later, EPS)  # the sum is read before the linear
        return call(m.graph, "fp8_linear", normed, w, s, b, 0, name="layers_1_qkv_proj"), reader, summed

    m.build(make)
    x, r = _x(m), _x(m)
    run = lambda: m.gm(*[{"x": x, "residual": r}.get(p.name) if weight_name(p) is None
                         else load(m.ctx.params[weight_name(p)]) for p in m.graph.nodes if p.op == "placeholder"])
    m.gm.recompile()
    before = run()
    assert apply_rules(m.gm, fp8_linears.PROLOGUE, m.ctx) == 1
    eliminate_dead_code(m.gm, m.ctx.params)
    m.gm.recompile()
    _same(before, run())
    (new,) = [u for u in m.graph.nodes if is_op(u, "fp8_norm_linear")]
    assert new.args == (m.x, residual, n, EPS, w, s, b, 0) and new.name == "layers_1_qkv_proj"
    out, reader, summed = m.out.args[0]
    assert (out.args, summed.args) == ((new, 0), (new, 1)) and reader.args[0] is summed
    assert sorted(m.ops()) == ["fp8_norm_linear", "rms_norm"]


def test_the_norm_stays_where_it_is_shared_or_is_the_sum():
    m = _Model()
    n = m.norm("layers.0.input_layernorm.weight")
    (wa, sa, _), (wb, sb, _) = m.fp8("layers.0.a_proj", 16, 0), m.fp8("layers.0.b_proj", 16, 32)

    def make():
        norm = call(m.graph, "rms_norm", m.x, n, EPS)
        fused = call(m.graph, "fused_add_rms_norm", m.x, m.x, n, EPS)
        normed = item(m.graph, fused, 0)
        return (call(m.graph, "fp8_linear", norm, wa, sa, None, 0), call(m.graph, "fp8_linear", norm, wb, sb, None, 32),
                call(m.graph, "fp8_linear", item(m.graph, fused, 1), wa, sa, None, 0),
                call(m.graph, "fp8_linear", normed, wa, sa, None, 0), call(m.graph, "fp8_linear", normed, wb, sb, None, 32),
                call(m.graph, "fp8_linear", m.x, wa, sa, None, 0))

    for node in m.build(make):
        assert fp8_linears._norm_fp8_linear(node, m.ctx) is None, node.args[0]


def test_an_fp8_linear_over_silu_and_mul_becomes_fp8_silu_mul_linear():
    m = _Model()
    w, s, b = m.fp8("layers.0.down_proj", H, 32, cols=32, bias=True)
    m.build(lambda: call(m.graph, "fp8_linear", call(m.graph, "silu_and_mul", m.x), w, s, b, 32, name="layers_0_down_proj"))
    x = _x(m)
    before = m.run(x)
    assert apply_rules(m.gm, fp8_linears.PROLOGUE, m.ctx) == 1
    eliminate_dead_code(m.gm, m.ctx.params)
    _same([before], [m.run(x)])
    new = m.out.args[0]
    assert is_op(new, "fp8_silu_mul_linear") and new.args == (m.x, w, s, b, 32) and new.name == "layers_0_down_proj"
    assert m.ops() == ["fp8_silu_mul_linear"]
    assert m.ctx.log == ["fp8_linear(silu_and_mul(x)) -> fp8_silu_mul_linear(x): layers_0_down_proj"]


def test_a_shared_activation_stays():
    m = _Model()
    (wa, sa, _), (wb, sb, _) = m.fp8("layers.0.a_proj", 16, 0, cols=32), m.fp8("layers.0.b_proj", 16, 32, cols=32)

    def make():
        act = call(m.graph, "silu_and_mul", m.x)
        return (call(m.graph, "fp8_linear", act, wa, sa, None, 0), call(m.graph, "fp8_linear", act, wb, sb, None, 32),
                call(m.graph, "fp8_linear", m.x, wa, sa, None, 0))

    for node in m.build(make):
        assert fp8_linears._silu_mul_fp8_linear(node, m.ctx) is None
