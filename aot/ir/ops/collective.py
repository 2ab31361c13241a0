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


def _all_reduce_add_rms_norm_fake(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return torch.empty_like(x), torch.empty_like(x)


@register_op(fake=_all_reduce_add_rms_norm_fake)
def all_reduce_add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    # returns (rms_norm(all_reduce(x) + residual), all_reduce(x) + residual): the norm reads the reduced sum
    from .norm import fused_add_rms_norm

    return fused_add_rms_norm.native(all_reduce.native(x), residual, weight, eps)


class Collective:
    """What a GPU impl of a collective op returns among its launches: one NCCL call, which the plan
    records as its step's "collective" entry (docs/FORMAT.md) and the runtime runs before the step's
    kernel launches. `send` and `recv` are tensors (or `Out(i)`) whose arena buffers the call reads and writes."""

    def __init__(self, op: str, send, recv):
        self.op, self.send, self.recv = op, send, recv

    @property
    def args(self) -> tuple:  # the planner places an impl's own tensors (recv scratch) in the arena
        return (self.send, self.recv)

    def entry(self, ref_of, outs: list) -> dict:
        from ...launch import resolve

        send, recv = (resolve(t, outs) for t in (self.send, self.recv))
        return {"op": self.op, "send": ref_of(send), "recv": ref_of(recv),
                "dtype": str(send.dtype).removeprefix("torch."), "count": send.numel()}
