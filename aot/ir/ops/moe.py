"""Mixture of experts: the router's top-k choice, and the experts' gated MLPs summed by its weights."""

import torch
from torch import Tensor

from ..op import register_op


def _moe_route_fake(logits: Tensor, top_k: int, renormalize: bool) -> tuple[Tensor, Tensor]:
    shape = (logits.shape[0], top_k)
    return logits.new_empty(shape, dtype=torch.float32), logits.new_empty(shape, dtype=torch.int32)


@register_op(fake=_moe_route_fake)
def moe_route(logits: Tensor, top_k: int, renormalize: bool) -> tuple[Tensor, Tensor]:
    # [T, E] -> (weights [T, k] float32, expert ids [T, k] int32): softmax in float32, the k largest
    # in descending order (tied experts in either order), divided by their sum when renormalize
    probs = torch.softmax(logits.float(), dim=-1)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids.to(torch.int32)


def _fused_moe_fake(x: Tensor, w13: Tensor, w2: Tensor, topk_weights: Tensor, topk_ids: Tensor) -> Tensor:
    return torch.empty_like(x)


@register_op(fake=_fused_moe_fake)
def fused_moe(x: Tensor, w13: Tensor, w2: Tensor, topk_weights: Tensor, topk_ids: Tensor) -> Tensor:
    # x [T, H], w13 [E, 2I, H] (gate | up), w2 [E, H, I], topk [T, k] ->
    # out[t] = sum_j w_j * (silu(x[t] gate_e^T) * x[t] up_e^T) down_e^T with e = topk_ids[t, j],
    # each expert's product in x's dtype, the weight rounded to x's dtype, the sum in float32
    out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    for e in topk_ids.unique().tolist():
        token, slot = torch.where(topk_ids == e)
        gate, up = torch.nn.functional.linear(x[token], w13[e]).chunk(2, dim=-1)
        y = torch.nn.functional.linear(torch.nn.functional.silu(gate) * up, w2[e])
        out.index_add_(0, token, (y * topk_weights[token, slot, None].to(x.dtype)).float())
    return out.to(x.dtype)
