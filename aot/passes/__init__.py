"""Graph passes: small rule tables, run by `run_passes` as one flat sequence of named stages."""

from __future__ import annotations

import torch.fx

from . import fp8_linears, fuse_add_norm, fuse_all_reduce_norm, fuse_linear_prologue, fuse_rope_cache, merge_linears
from .dce import eliminate_dead_code
from .rewrite import PassContext, Rule, apply_rules

STAGES: list[tuple[str, list[Rule]]] = [
    ("fp8_linears", fp8_linears.TO_FP8),
    ("fuse_add_rms_norm", fuse_add_norm.RULES),
    ("merge_linears", merge_linears.RULES + fp8_linears.MERGE),
    ("fuse_rope_cache", fuse_rope_cache.RULES),
    ("fuse_linear_prologue", fuse_linear_prologue.RULES + fp8_linears.PROLOGUE),
    ("fuse_all_reduce_norm", fuse_all_reduce_norm.RULES),
]


def run_passes(gm: torch.fx.GraphModule, params: dict, stop_after: str | None = None) -> list[str]:
    """Run every stage in order (then DCE); returns the log of rewrites."""
    ctx = PassContext(params)
    for name, rules in STAGES:
        count = apply_rules(gm, rules, ctx)
        removed = eliminate_dead_code(gm, params)
        ctx.log.append(f"stage {name}: {count} rewrites, {removed} dead nodes removed")
        if name == stop_after:
            break
    gm.recompile()
    return ctx.log


__all__ = ["PassContext", "Rule", "STAGES", "apply_rules", "eliminate_dead_code", "run_passes"]
