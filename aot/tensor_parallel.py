"""Tensor parallelism at build time: which part of each weight a rank holds, and each rank's dims.

Column-parallel layers (q/k/v, gate/up, experts' gate/up) split their output rows; row-parallel
ones (o, down, experts' down) split their input columns, and only rank 0 keeps their bias, since
an all-reduce sums the ranks' partial outputs. Embedding and LM head split the vocabulary. KV heads
split across ranks, or, with fewer KV heads than ranks, each KV head is held by size/heads ranks.
An FP8 linear's weight_scale ([N, 1] per channel, [N, K/G] block-wise) follows its weight: a column-
parallel one's rows split as the weight's rows do; a row-parallel one's per-channel scale is whole on
every rank and a block-wise one's column groups split as the weight's columns do (each rank's K/size
must be whole groups). Everything else (norms, router, rope tables) is replicated. Each rule reads one
tensor, so sharding is one more per-tensor transform of the streamed weights.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import torch

from llmc.errors import LlmcError, UserError

from .fp8_weights import ScaleWeight
from .spec import ModelSpec
from .weights import Weight, load

VOCAB_START = "embed_tokens.vocab_start"  # per-rank [1] int32: the first vocabulary row this rank holds


@dataclass(frozen=True)
class Rule:
    kind: str  # replicate | column | row | vocab | row_bias | row_scale
    dim: int = 0
    segments: tuple[str, ...] = ("all",)  # along `dim`, each split on its own: q | kv | all | half


# IR weight name -> rule; the first pattern that matches wins, and a weight no pattern matches is an error.
RULES: tuple[tuple[str, Rule], ...] = (
    (r"layers\.\d+\.q_proj\.(weight|weight_scale|bias)", Rule("column", 0, ("q",))),
    (r"layers\.\d+\.[kv]_proj\.(weight|weight_scale|bias)", Rule("column", 0, ("kv",))),
    (r"layers\.\d+\.qkv_proj\.(weight|weight_scale|bias)", Rule("column", 0, ("q", "kv", "kv"))),
    (r"layers\.\d+\.(gate|up)_proj\.(weight|weight_scale|bias)", Rule("column", 0)),
    (r"layers\.\d+\.gate_up_proj\.(weight|weight_scale|bias)", Rule("column", 0, ("half", "half"))),
    (r"layers\.\d+\.experts\.gate_up_proj", Rule("column", 1, ("half", "half"))),
    (r"layers\.\d+\.o_proj\.weight", Rule("row", 1, ("q",))),
    (r"layers\.\d+\.down_proj\.weight", Rule("row", 1)),
    (r"layers\.\d+\.experts\.down_proj", Rule("row", 2)),
    (r"layers\.\d+\.(o|down)_proj\.bias", Rule("row_bias")),
    (r"layers\.\d+\.(o|down)_proj\.weight_scale", Rule("row_scale", 1)),  # [N, 1] whole, [N, K/G] by groups
    (r"(embed_tokens|lm_head)\.weight", Rule("vocab", 0)),
    (r"(layers\.\d+\.)?\w*norm\.weight|layers\.\d+\.router\.weight|rope\..*", Rule("replicate")),
)


def rule_for(name: str) -> Rule:
    for pattern, rule in RULES:
        if re.fullmatch(pattern, name):
            return rule
    raise LlmcError(f"weight {name!r} has no tensor-parallel rule in aot/tensor_parallel.py")


def check_divisible(spec: ModelSpec, size: int) -> None:
    """One line naming the config field that `size` ranks cannot split."""
    if size < 1:
        raise UserError(f"--tensor-parallel-size {size}: must be at least 1")
    needs = [("num_attention_heads", spec.num_q_heads), ("vocab_size", spec.vocab_size)]
    if not spec.moe_layers or not all(spec.moe_layers):
        needs.append(("intermediate_size", spec.intermediate_size))
    if any(spec.moe_layers):
        needs.append(("moe_intermediate_size", spec.moe_intermediate_size))
    for field, value in needs:
        if value % size:
            raise UserError(f"config.json: {field} {value} is not divisible by --tensor-parallel-size {size}")
    kv = spec.num_kv_heads
    if kv % size and size % kv:
        raise UserError(f"config.json: num_key_value_heads {kv} and --tensor-parallel-size {size}: one must divide the other")


def check_fp8_groups(spec: ModelSpec, size: int, group: int) -> None:
    """Block-wise FP8 (`group` > 0): a row-parallel linear's K/size input columns per rank must be whole groups."""
    needs = [("num_attention_heads", spec.num_q_heads, spec.q_size, "o_proj")]
    if not spec.moe_layers or not all(spec.moe_layers):
        needs.append(("intermediate_size", spec.intermediate_size, spec.intermediate_size, "down_proj"))
    for field, value, columns, layer in needs:
        if group and (columns // size) % group:
            raise UserError(f"config.json: {field} {value} split over --tensor-parallel-size {size} gives each rank "
                            f"{columns // size} input columns of {layer}, not whole blocks of "
                            f"quantization_config.weight_block_size {group}")


def rank_spec(spec: ModelSpec, size: int) -> ModelSpec:
    """The dims one rank computes with (vocab_size stays whole: the logits are gathered)."""
    if size == 1:
        return spec
    return dataclasses.replace(
        spec, num_q_heads=spec.num_q_heads // size, num_kv_heads=max(spec.num_kv_heads // size, 1),
        intermediate_size=spec.intermediate_size // size,
        moe_intermediate_size=spec.moe_intermediate_size // size if spec.moe_intermediate_size else 0,
    )


def shard(name: str, tensor: torch.Tensor, spec: ModelSpec, rank: int, size: int) -> torch.Tensor:
    """Rank `rank`'s part of the weight `name` (of the whole model's `spec`)."""
    rule = rule_for(name)
    if size == 1 or rule.kind == "replicate":
        return tensor
    if rule.kind == "row_bias":
        return tensor if rank == 0 else torch.zeros_like(tensor)
    if rule.kind == "row_scale" and tensor.shape[1] == 1:  # per channel: a row's scale holds for all its columns
        return tensor
    if rule.kind == "row_scale" and tensor.shape[1] % size:
        raise LlmcError(f"{name}: {tensor.shape[1]} column groups do not split across {size} ranks")
    total = tensor.shape[rule.dim]
    sizes = _segment_sizes(rule.segments, total, spec)
    parts, start = [], 0
    for segment, length in zip(rule.segments, sizes):
        lo, hi = _rank_range(segment, length, spec, rank, size)
        parts.append(tensor.narrow(rule.dim, start + lo, hi - lo))
        start += length
    return parts[0].contiguous() if len(parts) == 1 else torch.cat(parts, dim=rule.dim)


def rank_weights(weights: dict, spec: ModelSpec, size: int) -> tuple[dict, ...]:
    """Every rank's IR parameters: each a lazy shard of the whole one, plus the rank's vocab start. The ranks'
    shards of one weight share one load of it (`_Whole`), so a build reads each checkpoint tensor once."""
    if size == 1:
        return (dict(weights),)
    wholes = {name: _Whole(weight, size) for name, weight in weights.items()}
    ranks = []
    for rank in range(size):
        out = {name: sharded(name, whole, spec, rank, size) for name, whole in wholes.items()}
        start = torch.tensor([rank * spec.vocab_size // size], dtype=torch.int32)
        out[VOCAB_START] = Weight((1,), torch.int32, lambda start=start: start, f"vocab start of rank {rank}/{size}")
        ranks.append(out)
    return tuple(ranks)


class _Whole:
    """A whole weight that `size` ranks cut their shards from: loaded by the first rank that needs it and kept
    until every rank has taken it (the writer makes the ranks' shards of one weight one after another), so
    memory holds one weight, not one per rank. A rank that takes it again starts a fresh load."""

    def __init__(self, weight, size: int):
        self.weight, self.size, self.tensor, self.taken = weight, size, None, set()

    def take(self, rank: int) -> torch.Tensor:
        if self.tensor is None or rank in self.taken:
            self.tensor, self.taken = load(self.weight), set()
        tensor = self.tensor
        self.taken.add(rank)
        if len(self.taken) == self.size:
            self.tensor, self.taken = None, set()
        return tensor


def sharded(name: str, whole: _Whole, spec: ModelSpec, rank: int, size: int) -> Weight:
    """A Weight for rank `rank`'s part of the whole weight: its shape now, its data when the writer loads it."""
    weight, doc = whole.weight, getattr(whole.weight, "doc", "tensor")
    if rule_for(name).kind == "replicate":
        return Weight(tuple(weight.shape), weight.dtype, lambda: whole.take(rank), doc)
    meta = shard(name, torch.empty(tuple(weight.shape), dtype=weight.dtype, device="meta"), spec, rank, size)
    part = Weight(tuple(meta.shape), weight.dtype, lambda: shard(name, whole.take(rank), spec, rank, size).contiguous(),
                  f"shard({doc}, rank {rank}/{size})")
    if isinstance(weight, ScaleWeight):  # the fp8 passes read a scale's group_size
        return ScaleWeight(part.shape, part.dtype, part.make, part.doc, weight.group_size)
    return part


def _segment_sizes(segments: tuple[str, ...], total: int, spec: ModelSpec) -> list[int]:
    if segments == ("q", "kv", "kv"):
        return [spec.q_size, spec.kv_size, spec.kv_size]
    return [total // len(segments)] * len(segments)


def _rank_range(segment: str, length: int, spec: ModelSpec, rank: int, size: int) -> tuple[int, int]:
    if segment == "kv" and spec.num_kv_heads < size:
        head = rank // (size // spec.num_kv_heads)  # this KV head is replicated on size/heads ranks
        return head * spec.head_dim, (head + 1) * spec.head_dim
    step = length // size
    return rank * step, (rank + 1) * step
