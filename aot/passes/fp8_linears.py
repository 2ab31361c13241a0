"""FP8 linears: a linear over an e4m3 weight becomes `fp8_linear`, then merges and takes prologues.

`to_fp8` runs first (the trace writes plain `linear`s; a weight's scale sits beside it as
`<name>.weight_scale`, see `aot/fp8_weights.py`). The merge and prologue stages mirror
merge_linears and fuse_linear_prologue for the FP8 ops: concatenating rows of weights and of
their per-row scales is exact, and the norm or gated activation feeds the activation quantizer.
`per_rank_activations` is no build stage: it makes the whole model a tensor-parallel self-test's reference.
"""

import torch

from ..tensor_parallel import rule_for
from ..weights import Weight, concat, load, shape_of
from .merge_linears import _merged_name, merged_split
from .rewrite import PassContext, Rule, add_weight, call, is_getitem, is_op, item, weight_name


def _scale_node(graph, weight: str):
    ref = "weight:" + weight.removesuffix(".weight") + ".weight_scale"
    return next((n for n in graph.nodes if n.op == "placeholder" and n.meta.get("ref") == ref), None)


def _to_fp8(node, ctx: PassContext):
    # linear(x, W8, b) -> fp8_linear(x, W8, W8_scale, b, G)
    x, weight, bias = node.args
    scale = _scale_node(node.graph, weight_name(weight) or "")
    if scale is None:
        return None
    group = ctx.params[weight_name(scale)].group_size
    return call(node.graph, "fp8_linear", x, weight, scale, bias, group)


def _merge_siblings(node, ctx: PassContext):
    # fp8_linear(x, A, a, .., G), fp8_linear(x, B, b, .., G) -> split(fp8_linear(x, [A; B], [a; b], .., G))
    x = node.args[0]
    group = [u for u in x.users if is_op(u, "fp8_linear") and u.args[0] is x and u.args[4] == node.args[4]]
    if len(group) < 2 or group[0] is not node:
        return None
    weights, scales = [weight_name(n.args[1]) for n in group], [weight_name(n.args[2]) for n in group]
    bias_args = [n.args[3] for n in group]
    biases = [None if b is None else weight_name(b) for b in bias_args]
    if None in weights or None in scales or len({b is None for b in bias_args}) > 1:
        return None
    if any(b is not None and name is None for b, name in zip(bias_args, biases)):
        return None
    graph, name = node.graph, _merged_name(list(weights))
    weight = add_weight(graph, ctx, name + ".weight", concat([ctx.params[w] for w in weights]))
    scale = add_weight(graph, ctx, name + ".weight_scale", concat([ctx.params[s] for s in scales]))
    bias = None if biases[0] is None else add_weight(graph, ctx, name + ".bias", concat([ctx.params[b] for b in biases]))
    sizes = [shape_of(ctx.params[w])[0] for w in weights]
    return merged_split(group, "fp8_linear", (x, weight, scale, bias, node.args[4]), name, sizes)


def _norm_fp8_linear(node, ctx: PassContext):
    # fp8_linear(rms_norm(x [+ r]), W8, s, b, G) -> fp8_norm_linear(x, r, w, eps, W8, s, b, G)[0]; the sum -> [1]
    x, weight, scale, bias, group = node.args
    if is_getitem(x, 0) and is_op(x.args[0], "fused_add_rms_norm") and len(x.users) == 1:
        fused, graph = x.args[0], node.graph
        with graph.inserting_after(fused):
            new = call(graph, "fp8_norm_linear", *fused.args, weight, scale, bias, group)
        with graph.inserting_after(new):
            out, summed = item(graph, new, 0), item(graph, new, 1)
        for u in [u for u in fused.users if is_getitem(u, 1)]:
            u.replace_all_uses_with(summed)
        return out
    if is_op(x, "rms_norm") and len(x.users) == 1:
        source, norm_weight, eps = x.args
        return item(node.graph, call(node.graph, "fp8_norm_linear", source, None, norm_weight, eps, weight, scale, bias,
                                     group), 0)
    return None


def _silu_mul_fp8_linear(node, ctx: PassContext):
    # fp8_linear(silu_and_mul(x), W8, s, b, G) -> fp8_silu_mul_linear(x, W8, s, b, G)
    x = node.args[0]
    if not is_op(x, "silu_and_mul") or len(x.users) != 1:
        return None
    return call(node.graph, "fp8_silu_mul_linear", x.args[0], *node.args[1:])


TO_FP8 = [Rule("linear", _to_fp8, "linear(x, W8) -> fp8_linear(x, W8, s)", inherit_name=True)]
MERGE = [Rule("fp8_linear", _merge_siblings, "fp8_linear(x, A), fp8_linear(x, B) -> split(fp8_linear(x, [A; B]))")]
PROLOGUE = [
    Rule("fp8_linear", _norm_fp8_linear, "fp8_linear(rms_norm(x [+ r])) -> fp8_norm_linear(x, r)", inherit_name=True),
    Rule("fp8_linear", _silu_mul_fp8_linear, "fp8_linear(silu_and_mul(x)) -> fp8_silu_mul_linear(x)", inherit_name=True),
]


def per_rank_activations(size: int) -> list[Rule]:
    """Rules making the whole model round activations as `size` tensor-parallel ranks do: each rank quantizes its
    own K/size columns of a token for a row-parallel (o/down) per-token linear, which is block-wise with G = K/size
    and every row's scale repeated per block."""

    def rewrite(node, ctx: PassContext):
        # fp8_linear(x, W8, s, b, 0) -> fp8_linear(x, W8, [s] * size, b, K/size), W8 row-parallel
        x, weight, scale, bias, group = node.args
        name = weight_name(weight)
        if group or size == 1 or name is None or rule_for(name).kind != "row":
            return None
        (n, k), whole = shape_of(ctx.params[name]), ctx.params[weight_name(scale)]
        wide = Weight((n, size), torch.float32, lambda: load(whole).expand(n, size), f"per_rank({whole.doc})")
        scales = add_weight(node.graph, ctx, name.removesuffix(".weight") + ".weight_scale_per_rank", wide)
        return call(node.graph, "fp8_linear", x, weight, scales, bias, k // size)

    return [Rule("fp8_linear", rewrite, "fp8_linear(x, W8, s, b, 0) -> fp8_linear(x, W8, [s] * size, b, K/size)",
                 inherit_name=True)]
