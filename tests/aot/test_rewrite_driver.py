"""The rewrite driver on hand-made graphs: where a new weight goes, how a replacement is wired in
(one node, or one per output of a multi-output op), which node keeps the matched node's name, what
the log says, and the bound on rounds."""

import operator
import warnings

import pytest
import torch
from llmc.aot.passes.rewrite import (
    PassContext,
    Rule,
    add_weight,
    apply_rules,
    call,
    erase_unused,
    is_getitem,
    is_op,
    item,
    outputs_of,
    weight_name,
)


def _module(build):
    """A GraphModule over input x whose output is `build(graph, x, ctx)`'s node or nodes."""
    graph, ctx = torch.fx.Graph(), PassContext({})
    x = graph.placeholder("x")
    out = graph.output(None)
    with graph.inserting_before(out):
        result = build(graph, x, ctx)
    out.args = (result,)
    return torch.fx.GraphModule(torch.nn.Module(), graph), ctx


def _names(gm):
    return [n.name for n in gm.graph.nodes]


def test_predicates_on_what_is_not_an_op_node():
    gm, _ = _module(lambda graph, x, ctx: item(graph, call(graph, "split", x, [2, 2]), 1))
    x, split, getter = list(gm.graph.nodes)[:3]
    assert not is_op(None, "split") and not is_op(x, "split") and not is_op(getter, "split") and is_op(split, "split")
    assert not is_op(split, "linear")
    assert is_getitem(getter) and is_getitem(getter, 1) and not is_getitem(getter, 0) and not is_getitem(split)
    assert not is_getitem(None)
    assert outputs_of(split) == {1: getter} and outputs_of(x) == {}


def test_weight_name_reads_only_a_weight_placeholders_ref():
    graph, ctx = torch.fx.Graph(), PassContext({})
    x = graph.placeholder("x")
    graph.output(None)
    w = add_weight(graph, ctx, "a:b.weight", torch.ones(4))
    norm = call(graph, "rms_norm", x, w, 1e-6)
    assert weight_name(w) == "a:b.weight"  # only the first colon separates the kind
    assert weight_name(x) is None  # an input: no ref at all
    x.meta["ref"] = "input:tokens"
    assert weight_name(x) is None
    norm.meta["ref"] = "weight:norm.weight"  # not a placeholder: not a weight, whatever its meta says
    assert weight_name(norm) is None and weight_name(None) is None and weight_name(1e-6) is None


def test_add_weight_goes_after_the_inputs_named_by_the_weight():
    weight = torch.ones(4)
    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6))
    node = add_weight(gm.graph, ctx, "layers.0.q_norm.weight", weight)
    assert _names(gm) == ["x", "weight_layers_0_q_norm_weight", "rms_norm", "output"]
    assert node.op == "placeholder" and node.target == "weight_layers_0_q_norm_weight"
    assert node.meta["ref"] == "weight:layers.0.q_norm.weight"
    assert ctx.params == {"layers.0.q_norm.weight": weight}


def _count_down(times):
    """A rule that replaces an rms_norm by a fresh one `times` times: one rewrite per round."""
    left = [times]

    def rewrite(node, ctx):
        if not left[0]:
            return None
        left[0] -= 1
        return call(node.graph, "rms_norm", *node.args)

    return Rule("rms_norm", rewrite, "norm -> norm")


def test_rules_run_round_after_round_until_none_fires():
    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6))
    assert apply_rules(gm, [_count_down(99)], ctx) == 99
    assert len(ctx.log) == 99 and ctx.log[0] == "norm -> norm: rms_norm" and ctx.log[1] == "norm -> norm: rms_norm_1"
    assert [n.op for n in gm.graph.nodes] == ["placeholder", "call_function", "output"]


def test_rules_that_keep_firing_stop_after_100_rounds():
    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6))
    with pytest.raises(RuntimeError) as e:
        apply_rules(gm, [_count_down(100)], ctx)
    assert str(e.value) == "rewrite rules did not converge: ['norm -> norm']"


def test_the_first_rule_that_returns_a_replacement_wins():
    seen = []
    skip = Rule("rms_norm", lambda node, ctx: seen.append("skip"), "never")
    fire = Rule("rms_norm", lambda node, ctx: seen.append("fire") or node.args[0], "norm -> x")
    after = Rule("rms_norm", lambda node, ctx: seen.append("after"), "too late")
    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6))
    assert apply_rules(gm, [skip, fire, after], ctx) == 1
    assert seen == ["skip", "fire"] and ctx.log == ["norm -> x: rms_norm"] and _names(gm) == ["x", "output"]


def test_a_node_a_rule_erased_is_not_matched_again():
    # the rule on `a` folds its sibling `b` in (as merging siblings does); `b` is then skipped, not rewritten
    def fold(node, ctx):
        if node.name != "a":
            raise AssertionError(f"{node.name} was matched after it was erased")
        b = next(n for n in node.graph.nodes if n.name == "b")
        b.replace_all_uses_with(node.args[0])
        node.graph.erase_node(b)
        return node.args[0]

    def build(graph, x, ctx):
        return call(graph, "rms_norm", x, x, 1e-6, name="a"), call(graph, "rms_norm", x, x, 1e-6, name="b")

    gm, ctx = _module(build)
    assert apply_rules(gm, [Rule("rms_norm", fold, "fold")], ctx) == 1 and _names(gm) == ["x", "output"]


def test_a_rule_may_erase_the_node_it_replaces():
    def replace_and_erase(node, ctx):
        x = node.args[0]
        node.replace_all_uses_with(x)
        node.graph.erase_node(node)
        return x

    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fx warns when asked to erase an erased node
        assert apply_rules(gm, [Rule("rms_norm", replace_and_erase, "gone")], ctx) == 1
    assert _names(gm) == ["x", "output"]


def _three_outputs(graph, x, ctx):
    split = call(graph, "split", x, [1, 1, 1], name="parts")
    return tuple(item(graph, split, i) for i in range(3))


def test_a_tuple_replaces_each_output_it_names_and_leaves_the_rest():
    # (new0, None) replaces output 0 only; 1 (None) and 2 (past the tuple's end) keep the old op alive
    def first_only(node, ctx):
        if 0 not in outputs_of(node):
            return None
        return call(node.graph, "rms_norm", node.args[0], node.args[0], 1e-6), None

    gm, ctx = _module(_three_outputs)
    assert apply_rules(gm, [Rule("split", first_only, "first only", inherit_name=True)], ctx) == 1
    out = list(gm.graph.nodes)[-1]
    first, second, third = out.args[0]
    assert is_op(first, "rms_norm") and first.name == "rms_norm"  # `parts` is still in use: the name stays taken
    assert is_getitem(second, 1) and is_getitem(third, 2) and second.args[0].name == "parts"
    assert len(outputs_of(second.args[0])) == 2  # the getitem of output 0 went with its last user


def test_a_tuple_replacing_every_output_erases_the_op_and_its_getitems():
    def swap(node, ctx):
        if node.args[1] != [1, 1, 1]:
            return None
        graph, x = node.graph, node.args[0]
        new = call(graph, "split", x, [2, 1])
        return item(graph, new, 0), item(graph, new, 1), x

    gm, ctx = _module(_three_outputs)
    assert apply_rules(gm, [Rule("split", swap, "swap", inherit_name=True)], ctx) == 1
    assert _names(gm) == ["x", "parts", "getitem_3", "getitem_4", "output"]  # the new op took the matched name


def test_the_first_output_of_a_tuple_takes_the_name():
    def two_ops(node, ctx):
        x = node.args[0]
        return call(node.graph, "rms_norm", x, x, 1e-6), call(node.graph, "silu_and_mul", x), x

    gm, ctx = _module(_three_outputs)
    assert apply_rules(gm, [Rule("split", two_ops, "two ops", inherit_name=True)], ctx) == 1
    assert _names(gm) == ["x", "parts", "silu_and_mul", "output"]
    assert [is_op(n, "rms_norm") for n in gm.graph.nodes] == [False, True, False, False]


def test_a_single_getitem_replacement_passes_the_name_to_its_op():
    def norm_first(node, ctx):
        return item(node.graph, call(node.graph, "split", node.args[0], [3]), 0)

    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6, name="layers_0_norm"))
    assert apply_rules(gm, [Rule("rms_norm", norm_first, "n", inherit_name=True)], ctx) == 1
    assert _names(gm) == ["x", "layers_0_norm", "getitem", "output"]


def test_a_rule_without_inherit_name_leaves_the_new_name():
    new = lambda node, ctx: call(node.graph, "silu_and_mul", node.args[0])
    gm, ctx = _module(lambda graph, x, ctx: call(graph, "rms_norm", x, x, 1e-6, name="layers_0_norm"))
    assert apply_rules(gm, [Rule("rms_norm", new, "n")], ctx) == 1
    assert _names(gm) == ["x", "silu_and_mul", "output"]


def test_erase_unused_keeps_what_is_still_read():
    gm, _ = _module(_three_outputs)
    split = list(gm.graph.nodes)[1]
    erase_unused(split)  # every output is read: nothing goes
    assert len(gm.graph.nodes) == 6
    spare = gm.graph.call_function(operator.getitem, (split, 0))
    erase_unused(split)  # an unread getitem goes, the op stays
    assert spare not in gm.graph.nodes and len(gm.graph.nodes) == 6
