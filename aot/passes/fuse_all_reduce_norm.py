"""A row-parallel layer's all-reduce and the residual add + norm after it -> one step.

Runs after fuse_linear_prologue: where the norm feeds one linear, norm_linear already reads the
reduced sum in its GEMM's prologue. What is left (the final norm before the LM head, a norm read
by the router and the experts) becomes one step whose NCCL all-reduce lands in scratch that the
add + norm kernel reads, so the reduced partial sums never take an arena buffer of their own.
"""

from .rewrite import PassContext, Rule, call, is_op, item


def _all_reduce_add_rms_norm(node, ctx: PassContext):
    # fused_add_rms_norm(all_reduce(x), r, w, eps) -> all_reduce_add_rms_norm(x, r, w, eps)
    reduced, residual, weight, eps = node.args
    if not is_op(reduced, "all_reduce") or len(reduced.users) != 1:
        return None
    new = call(node.graph, "all_reduce_add_rms_norm", reduced.args[0], residual, weight, eps)
    return item(node.graph, new, 0), item(node.graph, new, 1)


RULES = [Rule("fused_add_rms_norm", _all_reduce_add_rms_norm,
              "fused_add_rms_norm(all_reduce(x), r) -> all_reduce_add_rms_norm(x, r)", inherit_name=True)]
