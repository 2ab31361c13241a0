"""A norm or gated activation read only by a linear -> computed in that linear's prologue.

Runs after merge_linears, so that the input norm feeds one qkv_proj, the post-attention norm
one gate_up_proj, and silu_and_mul reads gate_up_proj directly. The final norm feeds lm_head
and stays as it is.
"""

from .rewrite import PassContext, Rule, call, is_getitem, is_op, item


def _norm_linear(node, ctx: PassContext):
    x, weight, bias = node.args
    if is_getitem(x, 0) and is_op(x.args[0], "fused_add_rms_norm") and len(x.users) == 1:
        # linear(fused_add_rms_norm(x, r, w, eps)[0], W, b) -> norm_linear(x, r, w, eps, W, b)[0]; [1] -> [1]
        fused = x.args[0]
        graph = node.graph
        with graph.inserting_after(fused):
            new = call(graph, "norm_linear", *fused.args, weight, bias)
        with graph.inserting_after(new):
            out, summed = item(graph, new, 0), item(graph, new, 1)
        old_summed = [u for u in fused.users if is_getitem(u, 1)]
        for u in old_summed:
            u.replace_all_uses_with(summed)
        return out
    if is_op(x, "rms_norm") and len(x.users) == 1:
        # linear(rms_norm(x, w, eps), W, b) -> norm_linear(x, None, w, eps, W, b)[0]
        source, norm_weight, eps = x.args
        new = call(node.graph, "norm_linear", source, None, norm_weight, eps, weight, bias)
        return item(node.graph, new, 0)
    return None


GATED = {"silu_and_mul": "silu_mul_linear", "gelu_tanh_and_mul": "gelu_tanh_mul_linear"}  # activation -> fused op


def _gated_linear(node, ctx: PassContext):
    # linear(act_and_mul(x), W, b) -> act_mul_linear(x, W, b), act = silu | gelu_tanh
    x, weight, bias = node.args
    fused = next((GATED[op] for op in GATED if is_op(x, op)), None)
    if fused is None or len(x.users) != 1:
        return None
    return call(node.graph, fused, x.args[0], weight, bias)


RULES = [
    Rule("linear", _norm_linear, "linear(rms_norm(x [+ r])) -> norm_linear(x, r)", inherit_name=True),
    Rule("linear", _gated_linear, "linear(act_and_mul(x)) -> act_mul_linear(x)", inherit_name=True),
]
