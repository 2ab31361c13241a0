"""Collectives across the tensor-parallel ranks. The native impls run over torch.distributed
(gloo on the cpu backend); on one rank, or with no process group, they are the identity."""

import torch
from torch import Tensor

from ..op import register_op


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@register_op
def all_reduce(x: Tensor) -> Tensor:
    # the sum of x over the ranks, accumulated in float32 and rounded once to x's dtype
    total = x.float().clone()
    if _world() > 1:
        import torch.distributed as dist

        dist.all_reduce(total)
    return total.to(x.dtype)


def _all_gather_fake(x: Tensor, world_size: int) -> Tensor:
    return x.new_empty((*x.shape[:-1], x.shape[-1] * world_size))


@register_op(fake=_all_gather_fake)
def all_gather(x: Tensor, world_size: int) -> Tensor:
    # [..., n] on each of world_size ranks -> [..., n * world_size], rank order (the vocab-parallel logits)
    if world_size == 1:
        return x.clone()
    if _world() != world_size:
        raise RuntimeError(f"all_gather over {world_size} ranks, but the process group has {_world()}")
    import torch.distributed as dist

    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=-1)
