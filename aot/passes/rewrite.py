"""The rewrite driver: rules are (op, function) pairs; a function returns a replacement or None.

A replacement is the node (or tuple of nodes, one per output of a multi-output op) that takes
the matched node's place; the driver rewires every use and lets DCE drop what is left.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.fx

from ..ir import OPS, op_of


@dataclass
class PassContext:
    params: dict  # IR parameter -> Weight (or tensor); weight-transforming rules add lazy Weights
    log: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Rule:
    op: str
    rewrite: Callable[[torch.fx.Node, PassContext], object]
    doc: str
    inherit_name: bool = False  # the new op node takes the matched node's name (layers_0_qkv_proj, ...)


def is_op(node, name: str) -> bool:
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    op = op_of(node.target)
    return op is not None and op.name == name


def is_getitem(node, index: int | None = None) -> bool:
    return (
        isinstance(node, torch.fx.Node)
        and node.op == "call_function"
        and node.target is operator.getitem
        and (index is None or node.args[1] == index)
    )


def call(graph: torch.fx.Graph, op: str, *args, name: str | None = None) -> torch.fx.Node:
    node = graph.call_function(OPS[op].torch_op, tuple(args))
    if name:
        node._rename(name)
    return node


def item(graph: torch.fx.Graph, node: torch.fx.Node, index: int) -> torch.fx.Node:
    return graph.call_function(operator.getitem, (node, index))


def outputs_of(node: torch.fx.Node) -> dict[int, torch.fx.Node]:
    """index -> getitem node, for a multi-output op."""
    return {u.args[1]: u for u in node.users if is_getitem(u)}


def weight_name(node) -> str | None:
    if isinstance(node, torch.fx.Node) and node.op == "placeholder":
        ref = node.meta.get("ref", "")
        if ref.startswith("weight:"):
            return ref.split(":", 1)[1]
    return None


def add_weight(graph: torch.fx.Graph, ctx: PassContext, name: str, weight) -> torch.fx.Node:
    ctx.params[name] = weight
    first = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first):
        node = graph.placeholder("weight_" + name.replace(".", "_"))
    node.meta["ref"] = f"weight:{name}"
    return node


def apply_rules(gm: torch.fx.GraphModule, rules: list[Rule], ctx: PassContext) -> int:
    """Apply rules until none fires; returns how many rewrites happened."""
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        by_op.setdefault(rule.op, []).append(rule)
    total, changed, rounds = 0, True, 0
    while changed:
        changed, rounds = False, rounds + 1
        if rounds > 100:
            raise RuntimeError(f"rewrite rules did not converge: {[r.doc for r in rules]}")
        for node in list(gm.graph.nodes):
            op = op_of(node.target) if node.op == "call_function" else None
            for rule in by_op.get(op.name if op else "", []):
                if getattr(node, "_erased", False):
                    break
                with gm.graph.inserting_before(node):
                    replacement = rule.rewrite(node, ctx)
                if replacement is None:
                    continue
                ctx.log.append(f"{rule.doc}: {node.name}")
                name = node.name
                _replace(node, replacement)
                if rule.inherit_name:
                    _inherit_name(replacement, name)
                total += 1
                changed = True
                break
    gm.graph.lint()
    return total


def _replace(node: torch.fx.Node, replacement) -> None:
    if getattr(node, "_erased", False):
        return
    if isinstance(replacement, torch.fx.Node):
        node.replace_all_uses_with(replacement)
    else:
        for index, getter in outputs_of(node).items():
            new = replacement[index] if index < len(replacement) else None
            if new is not None:
                getter.replace_all_uses_with(new)
    erase_unused(node)


def _inherit_name(replacement, name: str) -> None:
    new = replacement[0] if isinstance(replacement, tuple) and replacement else replacement
    if is_getitem(new):
        new = new.args[0]
    if isinstance(new, torch.fx.Node) and all(n.name != name for n in new.graph.nodes):
        new.graph._graph_namespace._used_names.discard(name)  # fx never frees an erased node's name
        new._rename(name)


def erase_unused(node: torch.fx.Node) -> None:
    """Erase a replaced node and its unused getitems."""
    for getter in list(outputs_of(node).values()):
        if not getter.users:
            node.graph.erase_node(getter)
    if not node.users:
        node.graph.erase_node(node)
