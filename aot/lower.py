"""Lowering: bind every node of a plan's graph to one impl for the target.

The target's priority list (or the user's override) is walked in order; an impl is taken when it
is available on the target and supports the node's argument shapes. The decision and the reason
each other impl lost are recorded for impls.lock.json. On a GPU target only impls that launch
kernels qualify: the GPU runtimes execute launches, so a `native` step (even one asked for with
--op-priority) would be skipped there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx

from llmc.errors import UserError

from .ir import Impl, op_of
from .target import Target


@dataclass(frozen=True)
class Choice:
    impl: Impl
    rejected: dict[str, str] = field(default_factory=dict)

    def lock_entry(self) -> dict:
        return {"op": self.impl.op.name, "provider": self.impl.provider, "rejected": dict(sorted(self.rejected.items()))}


def choose_impl(node: torch.fx.Node, args: tuple, target: Target, overrides: dict) -> Choice:
    op = op_of(node.target)
    priority = target.priority(op.name, overrides)
    rejected: dict[str, str] = {}
    chosen = None
    for provider in priority:
        impl = op.impls.get(provider)
        if impl is None:
            rejected[provider] = "not registered"
        elif not impl.available_on(target.name):
            rejected[provider] = f"not available on {target.name}"
        elif not impl.launches and target.compiles_kernels:  # the GPU runtimes run kernels only
            rejected[provider] = (f"launches no kernel, and the {target.backend} runtime for {target.name} "
                                  "runs kernels only")
        elif not impl.supports(*args):
            rejected[provider] = "does not support these argument shapes"
        else:
            chosen = impl
            break
    if chosen is None:
        reasons = "; ".join(f"{p}: {r}" for p, r in rejected.items()) or "its priority list is empty"
        raise UserError(
            f"node {node.name} (op {op.name}) has no impl for {target.name}: {reasons}. "
            f"Pass --op-priority {op.name}=<provider> to choose one ({', '.join(sorted(op.impls))})"
        )
    for provider in sorted(op.impls):
        if provider != chosen.provider and provider not in rejected:
            rejected[provider] = f"lower priority than {chosen.provider} on {target.name}"
    return Choice(chosen, rejected)
