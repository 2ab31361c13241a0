"""split(qkv) -> [q/k norm] -> rotary -> kv_cache_write  =>  one qkv_rope_cache op."""

from .rewrite import PassContext, Rule, call, is_getitem, is_op


def _normed(node):
    """(input, norm weight or None, eps or None) of an optional head_rms_norm."""
    if is_op(node, "head_rms_norm"):
        return node.args[0], node.args[1], node.args[2]
    return node, None, None


def _rope_cache(node, ctx: PassContext):
    # kv_cache_write(rotary(norm(q), norm(k))[1], v) with q, k, v = split(qkv) -> qkv_rope_cache(qkv, ...)
    k_rot, v, k_cache, v_cache, slots = node.args
    if not is_getitem(k_rot, 1) or not is_op(k_rot.args[0], "rotary_embedding"):
        return None
    rotary = k_rot.args[0]
    q_in, k_in, positions, table, head_dim = rotary.args
    q, q_norm, q_eps = _normed(q_in)
    k, k_norm, k_eps = _normed(k_in)
    parts = [q, k, v]
    if not all(is_getitem(p, i) for i, p in enumerate(parts)) or len({p.args[0] for p in parts}) != 1:
        return None
    split = q.args[0]
    if not is_op(split, "split") or len(split.args[1]) != 3:
        return None
    q_size, kv_size, _ = split.args[1]
    eps = q_eps if q_eps is not None else (k_eps if k_eps is not None else 1e-6)
    rotated_q = [u for u in rotary.users if is_getitem(u, 0)]
    new = call(
        node.graph, "qkv_rope_cache", split.args[0], positions, table, q_norm, k_norm, k_cache, v_cache, slots,
        q_size // head_dim, kv_size // head_dim, head_dim, eps,
        name=node.name.replace("kv_write", "qkv_rope_cache"),
    )
    for u in rotated_q:
        u.replace_all_uses_with(new)
    node.graph.erase_node(node)
    return ()  # the cache write is gone and its q consumers are rewired: nothing left to replace


RULES = [Rule("kv_cache_write", _rope_cache, "kv_cache_write(rotary(norm(split(qkv)))) -> qkv_rope_cache(qkv)")]
