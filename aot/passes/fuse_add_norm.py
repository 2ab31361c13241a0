"""Residual add + RMS norm -> one fused op."""

from .rewrite import PassContext, Rule, call, is_op, item


def _add_rms_norm(node, ctx: PassContext):
    # rms_norm(add(x, r), w, eps) -> fused_add_rms_norm(x, r, w, eps)[0]; add(x, r) -> [1]
    summed, weight, eps = node.args
    if not is_op(summed, "add"):
        return None
    graph = node.graph
    with graph.inserting_after(summed):
        fused = call(graph, "fused_add_rms_norm", *summed.args, weight, eps)
    with graph.inserting_after(fused):
        normed, new_sum = item(graph, fused, 0), item(graph, fused, 1)
    summed.replace_all_uses_with(new_sum)
    return normed


RULES = [Rule("rms_norm", _add_rms_norm, "rms_norm(x + r) -> fused_add_rms_norm(x, r)", inherit_name=True)]
