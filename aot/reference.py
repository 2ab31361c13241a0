"""Run a traced graph eagerly with the ops' native functions: the build's own reference.

Used for the bundle's self-test: one prefill of a short prompt, logits for every position. Weights
may be lazy (`aot/weights.py`): only the ones one node reads are in memory at a time.
"""

from __future__ import annotations

import torch
import torch.fx

from .ir import op_of
from .weights import Weight


def prefill_logits(gm: torch.fx.GraphModule, params: dict, kv_layout: dict, num_layers: int, token_ids: list[int]) -> torch.Tensor:
    n = len(token_ids)
    block = kv_layout["block_size"]
    blocks = -(-n // block)
    dtype = getattr(torch, kv_layout["dtype"])
    cache = [torch.zeros(blocks, block, kv_layout["num_kv_heads"], kv_layout["head_dim"], dtype=dtype) for _ in range(2 * num_layers)]
    i32 = dict(dtype=torch.int32)
    inputs = {
        "input_ids": torch.tensor(token_ids, **i32), "positions": torch.arange(n, **i32),
        "slot_mapping": torch.arange(n, **i32), "block_tables": torch.arange(blocks, **i32)[None],
        "seq_lens": torch.tensor([n], **i32), "query_start_loc": torch.tensor([0, n], **i32),
        "logits_indices": torch.arange(n, **i32), "temperature": torch.zeros(n), "top_k": torch.zeros(n, **i32),
        "top_p": torch.ones(n), "min_p": torch.zeros(n), "uniform": torch.zeros(n),
        "logit_edit_index": torch.full((1, 2), -1, **i32), "logit_edit_values": torch.zeros(1, 3),
        "allowed_bitmask": torch.zeros(n, 1, **i32), "bitmask_on": torch.zeros(n, **i32),
        "logprob_token_ids": torch.full((n,), -1, **i32), "num_logprobs": torch.full((n,), -1, **i32),
    }
    args = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        kind, _, name = node.meta["ref"].partition(":")
        if kind == "input":
            args.append(inputs[name])
        elif kind == "weight":
            args.append(params[name])
        elif kind == "kv":
            which, _, layer = name.partition(":")
            args.append(cache[2 * int(layer) + (which == "v")])
        else:
            args.append(n)
    with torch.no_grad():
        return _LoadOnUse(gm).run(*args)["logits"]


class _LoadOnUse(torch.fx.Interpreter):
    """Runs the graph with lazy weights: each is loaded for the node that reads it, then dropped."""

    def call_function(self, target, args, kwargs):
        args = torch.fx.node.map_aggregate(args, lambda a: a.load() if isinstance(a, Weight) else a)
        op = op_of(target)
        if op is not None:  # the native function itself: torch's custom-op dispatch would import torch._dynamo (seconds)
            return op.native(*args, **kwargs)
        return super().call_function(target, args, kwargs)
