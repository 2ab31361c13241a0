"""Sibling linears that read the same input -> one linear over concatenated weights.

The merged weight is a lazy concatenation (`aot/weights.py`): the writer makes it, once, when it
streams the bundle. q/k/v becomes qkv_proj and gate/up becomes gate_up_proj; a `split` hands each
consumer its columns until later rules remove it.
"""

from ..weights import concat, shape_of
from .rewrite import PassContext, Rule, add_weight, call, erase_unused, is_getitem, is_op, item, weight_name


def _siblings(node):
    x = node.args[0]
    return [u for u in x.users if is_op(u, "linear") and u.args[0] is x]


def _merged_name(names: list[str]) -> str:
    prefix, _, _ = names[0].rpartition(".")  # layers.0.q_proj.weight -> layers.0.q_proj
    stems = [n.rsplit(".", 2)[-2].removesuffix("_proj") for n in names]
    joined = "".join(stems) if all(len(s) == 1 for s in stems) else "_".join(stems)
    return f"{prefix.rpartition('.')[0]}.{joined}_proj"


def _merge_siblings(node, ctx: PassContext):
    # linear(x, A, a), linear(x, B, b) -> split(linear(x, [A; B], [a; b]))
    group = _siblings(node)
    if len(group) < 2 or group[0] is not node:
        return None
    weights = [weight_name(n.args[1]) for n in group]
    biases = [n.args[2] for n in group]
    if None in weights or (any(b is None for b in biases) and not all(b is None for b in biases)):
        return None
    if any(b is not None and weight_name(b) is None for b in biases):
        return None
    graph = node.graph
    name = _merged_name(weights)
    weight = add_weight(graph, ctx, name + ".weight", concat([ctx.params[w] for w in weights]))
    bias = None
    if biases[0] is not None:
        bias = add_weight(graph, ctx, name + ".bias", concat([ctx.params[weight_name(b)] for b in biases]))
    sizes = [shape_of(ctx.params[w])[0] for w in weights]
    return merged_split(group, "linear", (node.args[0], weight, bias), name, sizes)


def merged_split(group: list, op: str, args: tuple, name: str, sizes: list[int]):
    """One `op` node in place of the sibling `group`, its columns split back among the siblings' users."""
    graph = group[0].graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    with graph.inserting_before(min(group, key=order.__getitem__)):
        merged = call(graph, op, *args, name=name.replace(".", "_"))
        parts = call(graph, "split", merged, sizes)
        pieces = [item(graph, parts, i) for i in range(len(group))]
    for old, new in zip(group[1:], pieces[1:]):
        old.replace_all_uses_with(new)
        erase_unused(old)
    return pieces[0]


def _concat_of_split(node, ctx: PassContext):
    # concat(split(y, s)[0], ..., split(y, s)[n-1]) -> y
    (parts,) = node.args
    sources = {p.args[0] for p in parts if is_getitem(p)}
    if len(sources) != 1 or len(parts) != len(node.args[0]):
        return None
    (split,) = sources
    if not is_op(split, "split") or [p.args[1] for p in parts] != list(range(len(split.args[1]))):
        return None
    return split.args[0]


RULES = [
    Rule("linear", _merge_siblings, "linear(x, A), linear(x, B) -> split(linear(x, [A; B]))"),
    Rule("concat", _concat_of_split, "concat(split(y)) -> y"),
]
