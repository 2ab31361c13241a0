"""Dead-code elimination: drop nodes nobody reads, keep ops that write the KV cache."""

import torch.fx

from ..ir import op_of


def _has_side_effects(node: torch.fx.Node) -> bool:
    op = op_of(node.target) if node.op == "call_function" else None
    return op is not None and bool(op.mutates)


def eliminate_dead_code(gm: torch.fx.GraphModule, params: dict) -> int:
    removed = 0
    for node in reversed(list(gm.graph.nodes)):
        if node.op == "output" or node.users or _has_side_effects(node):
            continue
        ref = node.meta.get("ref", "")
        if node.op == "placeholder" and not ref.startswith("weight:"):
            continue
        if ref.startswith("weight:"):
            params.pop(ref.split(":", 1)[1], None)
        gm.graph.erase_node(node)
        removed += 1
    gm.graph.lint()
    return removed
