"""Each pass on its own, on a traced two-layer Qwen3 (q/k norm, biasless) and Qwen2 (q/k/v bias).

Every test states a pass's whole effect: the ops it adds and removes, and the weights it adds
and drops (a weight left behind would be written to the bundle), with the logits unchanged.
"""

import functools
from collections import Counter

import torch

from llmc.aot.ir import op_of
from llmc.aot.model import trace
from llmc.aot.passes import fuse_add_norm, fuse_linear_prologue, fuse_rope_cache, merge_linears
from llmc.aot.passes.dce import eliminate_dead_code
from llmc.aot.passes.rewrite import PassContext, add_weight, apply_rules, call, is_op, item
from llmc.aot.reference import prefill_logits
from llmc.aot.spec import ModelSpec
from llmc.aot.weights import shape_of

H, I, HD, Q, KV = 32, 48, 8, 4, 2


def _model(qk_norm: bool, bias: bool):
    spec = ModelSpec("Qwen3ForCausalLM" if qk_norm else "Qwen2ForCausalLM", H, 2, Q, KV, HD, I, 50, 1e-6, 64, True,
                     10000.0, {}, (0, 0), qk_norm)
    g = torch.Generator().manual_seed(0)
    shapes = {"input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,), "q_proj.weight": (Q * HD, H),
              "k_proj.weight": (KV * HD, H), "v_proj.weight": (KV * HD, H), "o_proj.weight": (H, Q * HD),
              "gate_proj.weight": (I, H), "up_proj.weight": (I, H), "down_proj.weight": (H, I)}
    if qk_norm:
        shapes.update({"q_norm.weight": (HD,), "k_norm.weight": (HD,)})
    if bias:
        shapes.update({"q_proj.bias": (Q * HD,), "k_proj.bias": (KV * HD,), "v_proj.bias": (KV * HD,)})
    params = {f"layers.{i}.{k}": torch.randn(s, generator=g) * 0.3 for i in range(2) for k, s in shapes.items()}
    params.update({"embed_tokens.weight": torch.randn(50, H, generator=g), "norm.weight": torch.rand(H, generator=g) + 0.5})
    from llmc.aot.rope import cos_sin_cache

    params["rope.cos_sin"] = cos_sin_cache(HD, 10000.0, {}, 64)
    return spec, trace(spec, params), params


def _ops(gm) -> list[str]:
    return [op_of(n.target).name for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target)]


def _logits(spec, gm, params):
    layout = {"block_size": 4, "num_kv_heads": KV, "head_dim": HD, "dtype": "float32"}
    return prefill_logits(gm, params, layout, spec.num_layers, [3, 9, 27, 4, 11, 42, 7])


@functools.cache
def _reference_logits(qk_norm: bool, bias: bool) -> torch.Tensor:
    spec, gm, params = _model(qk_norm, bias)
    return _logits(spec, gm, params)


def _run(stages, qk_norm=True, bias=False):
    """Run the rule tables in order (DCE after each), check the logits held, and return the graph,
    the weights and what the last table changed: (rewrites, ops added, ops removed, weights added,
    weights dropped)."""
    spec, gm, params = _model(qk_norm, bias)
    ctx = PassContext(params)
    for rules in stages:
        ops, names = Counter(_ops(gm)), set(params)
        count = apply_rules(gm, rules, ctx)
        eliminate_dead_code(gm, params)
    gm.recompile()
    torch.testing.assert_close(_logits(spec, gm, params), _reference_logits(qk_norm, bias), rtol=1e-5, atol=1e-5)
    after = Counter(_ops(gm))
    return gm, params, (count, dict(after - ops), dict(ops - after), set(params) - names, names - set(params))


def _layers(*names):
    return {f"layers.{i}.{n}" for i in range(2) for n in names}


ALL = [fuse_add_norm.RULES, merge_linears.RULES, fuse_rope_cache.RULES, fuse_linear_prologue.RULES]


def test_add_rms_norm_fusion():
    # every norm but layer 0's input norm reads an add
    _, _, effect = _run([fuse_add_norm.RULES])
    assert effect == (4, {"fused_add_rms_norm": 4}, {"add": 4, "rms_norm": 4}, set(), set())


def test_merge_linears_concatenates_weights_and_drops_the_parts():
    _, params, (count, added, removed, new, dropped) = _run([merge_linears.RULES], bias=True)
    assert (added, removed) == ({"split": 2}, {"linear": 6, "concat": 2})  # per layer, qkv: 3 -> 1, gate/up: 2 -> 1
    assert new == _layers("qkv_proj.weight", "qkv_proj.bias", "gate_up_proj.weight")
    assert dropped == _layers("q_proj.weight", "k_proj.weight", "v_proj.weight", "q_proj.bias", "k_proj.bias",
                              "v_proj.bias", "gate_proj.weight", "up_proj.weight")
    assert shape_of(params["layers.0.qkv_proj.bias"]) == ((Q + 2 * KV) * HD,)
    assert shape_of(params["layers.1.gate_up_proj.weight"]) == (2 * I, H)


def test_rope_cache_fusion_after_merge():
    _, _, (_, added, removed, new, dropped) = _run([merge_linears.RULES, fuse_rope_cache.RULES])
    assert added == {"qkv_rope_cache": 2}
    assert removed == {"split": 2, "head_rms_norm": 4, "rotary_embedding": 2, "kv_cache_write": 2}
    assert not new and not dropped  # the q/k norm weights move into the fused op


def test_rope_cache_fusion_without_qk_norm():
    _, _, (_, added, removed, new, dropped) = _run([merge_linears.RULES, fuse_rope_cache.RULES], qk_norm=False, bias=True)
    assert (added, removed) == ({"qkv_rope_cache": 2}, {"split": 2, "rotary_embedding": 2, "kv_cache_write": 2})
    assert not new and not dropped


def test_linear_prologue_fusion():
    # every norm before a linear and every silu_and_mul before down_proj joins the linear
    for qk_norm, bias in ((True, False), (False, True)):
        gm, _, (_, added, removed, new, dropped) = _run(ALL, qk_norm, bias)
        assert added == {"norm_linear": 4, "silu_mul_linear": 2}
        assert removed == {"rms_norm": 1, "fused_add_rms_norm": 3, "linear": 6, "silu_and_mul": 2}
        assert not new and not dropped
        ops = _ops(gm)  # left: the final norm (it feeds lm_head) and o_proj
        assert ops.count("fused_add_rms_norm") == 1 and ops.index("fused_add_rms_norm") == ops.index("lm_head") - 1
        assert ops.count("linear") == 2


def test_linear_prologue_fusion_alone():
    # without merged linears each norm feeds several linears and stays; silu_and_mul(concat) still fuses
    _, _, effect = _run([fuse_add_norm.RULES, fuse_linear_prologue.RULES])
    assert effect == (2, {"silu_mul_linear": 2}, {"silu_and_mul": 2, "linear": 2}, set(), set())


def test_rules_do_not_fire_without_their_pattern():
    _, _, effect = _run([fuse_rope_cache.RULES])  # no merged qkv: nothing to fuse
    assert effect == (0, {}, {}, set(), set())


def test_dce_keeps_cache_writes_and_drops_unused_weights():
    _, gm, params = _model(True, False)
    add_weight(gm.graph, PassContext(params), "unused.weight", torch.zeros(1))
    names = set(params)
    assert eliminate_dead_code(gm, params) == 1
    assert names - set(params) == {"unused.weight"}
    assert _ops(gm).count("kv_cache_write") == 2


def test_dce_removes_a_dead_node_and_the_weight_only_it_read():
    _, gm, params = _model(True, False)
    (lm_head,) = [n for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target) and op_of(n.target).name == "lm_head"]
    spare = add_weight(gm.graph, PassContext(params), "spare_norm.weight", torch.ones(H))
    with gm.graph.inserting_before(lm_head):
        call(gm.graph, "rms_norm", lm_head.args[0], spare, 1e-6)
    ops, names = Counter(_ops(gm)), set(params)
    assert eliminate_dead_code(gm, params) == 2
    assert ops - Counter(_ops(gm)) == {"rms_norm": 1} and names - set(params) == {"spare_norm.weight"}


# -- each rule on a hand-made graph: where it must not fire ----------------------------------


def _graph(*uses):
    """A graph reading input x, with an output over `uses(graph, x, weight)`'s nodes."""
    graph, ctx = torch.fx.Graph(), PassContext({})
    x = graph.placeholder("x")
    out = graph.output(None)
    w = lambda name: add_weight(graph, ctx, name, torch.ones(4, 4))  # noqa: E731
    with graph.inserting_before(out):
        nodes = [use(graph, x, w) for use in uses]
    out.args = (tuple(nodes),)
    return graph, nodes, ctx


def _linear(source):
    return lambda graph, x, w: call(graph, "linear", source(graph, x, w), w(f"w{len(graph.nodes)}"), None)


def test_norm_linear_rule_leaves_a_summed_output_and_a_shared_norm():
    fused = lambda graph, x, w: item(graph, call(graph, "fused_add_rms_norm", x, x, w("n"), 1e-6), 1)  # noqa: E731
    _, (node,), ctx = _graph(_linear(fused))
    assert fuse_linear_prologue._norm_linear(node, ctx) is None  # [1] is the residual, not the norm
    shared = {}
    norm = lambda graph, x, w: shared.setdefault("n", call(graph, "rms_norm", x, w("n"), 1e-6))  # noqa: E731
    _, (a, b), ctx = _graph(_linear(norm), _linear(norm))
    assert fuse_linear_prologue._norm_linear(a, ctx) is None and fuse_linear_prologue._norm_linear(b, ctx) is None
    _, (plain,), ctx = _graph(_linear(lambda graph, x, w: x))
    assert fuse_linear_prologue._norm_linear(plain, ctx) is None


def test_gated_linear_rule_leaves_a_shared_activation():
    shared = {}
    act = lambda graph, x, w: shared.setdefault("a", call(graph, "silu_and_mul", x))  # noqa: E731
    _, (a, b), ctx = _graph(_linear(act), _linear(act))
    assert fuse_linear_prologue._gated_linear(a, ctx) is None
    _, (plain,), ctx = _graph(_linear(lambda graph, x, w: x))
    assert fuse_linear_prologue._gated_linear(plain, ctx) is None


def test_merge_rule_needs_siblings_alike():
    _, (alone,), ctx = _graph(_linear(lambda graph, x, w: x))
    assert merge_linears._merge_siblings(alone, ctx) is None
    biased = lambda graph, x, w: call(graph, "linear", x, w("a"), w("a_bias"))  # noqa: E731
    _, (a, b), ctx = _graph(biased, _linear(lambda graph, x, w: x))
    assert merge_linears._merge_siblings(a, ctx) is None  # one with a bias, one without
    computed = lambda graph, x, w: call(graph, "linear", x, call(graph, "rms_norm", x, w("n"), 1e-6), None)  # noqa: E731
    _, (c, d), ctx = _graph(computed, _linear(lambda graph, x, w: x))
    assert merge_linears._merge_siblings(c, ctx) is None  # a weight that is not a checkpoint tensor


def test_concat_of_split_rule_needs_every_part_in_order():
    def concat(order, count=2):
        def use(graph, x, w):
            split = call(graph, "split", x, [2] * count)
            return call(graph, "concat", [item(graph, split, i) for i in order])
        return use

    for order, count in (((1, 0), 2), ((0,), 2), ((0, 1), 3)):
        _, (node,), ctx = _graph(concat(order, count))
        assert merge_linears._concat_of_split(node, ctx) is None, (order, count)
    _, (node,), ctx = _graph(concat((0, 1, 2), 3))
    assert merge_linears._concat_of_split(node, ctx) is node.args[0][0].args[0].args[0]


def test_add_norm_rule_needs_an_add():
    _, (node,), ctx = _graph(lambda graph, x, w: call(graph, "rms_norm", x, w("n"), 1e-6))
    assert fuse_add_norm._add_rms_norm(node, ctx) is None


def test_gated_linear_rule_keeps_the_bias():
    act = lambda graph, x, w: call(graph, "linear", call(graph, "silu_and_mul", x), w("down"), w("down_bias"))  # noqa: E731
    _, (node,), ctx = _graph(act)
    fused = fuse_linear_prologue._gated_linear(node, ctx)
    assert is_op(fused, "silu_mul_linear") and fused.args[1:] == node.args[1:]


def test_dce_keeps_graph_inputs_and_forgives_a_weight_it_never_had():
    graph, ctx = torch.fx.Graph(), PassContext({})
    out = graph.output(None)
    add_weight(graph, ctx, "spare.weight", torch.ones(1))
    with graph.inserting_before(out):
        graph.placeholder("positions")  # an input nobody reads, between two unread weights: it stays
    add_weight(graph, ctx, "gone.weight", torch.ones(1))
    del ctx.params["gone.weight"]
    gm = torch.fx.GraphModule(torch.nn.Module(), graph)
    assert eliminate_dead_code(gm, ctx.params) == 2
    assert [n.name for n in gm.graph.nodes] == ["positions", "output"] and not ctx.params
