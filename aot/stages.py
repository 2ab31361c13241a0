"""The build's stages, each a function from the previous stage's value to its own.

    ingest -> trace -> fuse -> lower -> plan -> compile -> write

Every value is a frozen dataclass that `dump()` turns into JSON-friendly data; no stage calls
into a later one or edits an earlier one's value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch.fx

from . import ingest, model
from .build_key import build_key, toolchain_versions
from .config import BuildConfig
from .fp8_weights import quantized_linears
from .lower import Choice
from .passes import run_passes
from .quantize import Scheme, build_scheme
from .plan import MetaRun, buckets, lower_bucket, meta_run, plan_bucket, with_kernel_ids
from .spec import ModelSpec
from .tensor_parallel import check_divisible, check_fp8_groups, rank_spec, rank_weights
from .target import Target
from .weights import constant


@dataclass(frozen=True)
class Ingested:
    model_dir: Path
    config: BuildConfig
    target: Target
    spec: ModelSpec
    dtype: str
    max_seq_len: int
    weights: dict  # IR name -> Weight (nothing loaded)
    tokenizer: dict[str, Path]
    toolchain: dict[str, str]
    build_key: str
    quantization: Scheme | None = None  # FP8 linears: the checkpoint's scheme, or --quantize's

    @property
    def tensor_parallel_size(self) -> int:
        return self.config.tensor_parallel_size

    @property
    def rank_spec(self) -> ModelSpec:
        """The dims one tensor-parallel rank computes with (the whole model's without tensor parallelism)."""
        return rank_spec(self.spec, self.tensor_parallel_size)

    @property
    def kv_layout(self) -> dict:  # one rank's KV cache
        return {"num_layers": self.spec.num_layers, "block_size": self.config.kv_block_size,
                "num_kv_heads": self.rank_spec.num_kv_heads, "head_dim": self.spec.head_dim, "dtype": self.dtype}

    @property
    def max_blocks(self) -> int:
        return -(-self.max_seq_len // self.config.kv_block_size)


@dataclass(frozen=True)
class Traced:
    ingested: Ingested
    graph: torch.fx.GraphModule


@dataclass(frozen=True)
class Fused:
    ingested: Ingested
    graph: torch.fx.GraphModule
    weights: dict  # after weight transforms (lazy concatenations, ...); unused ones dropped
    pass_log: tuple[str, ...]
    rank_weights: tuple[dict, ...] = ()  # tensor-parallel: every rank's weights (rank 0's are `weights`)


@dataclass(frozen=True)
class Lowered:
    fused: Fused
    choices: dict[str, dict[str, Choice]]  # bucket name -> node name -> Choice
    runs: dict[str, MetaRun] = field(repr=False)  # bucket name -> its meta run on meta tensors, which planning reuses

    @property
    def lock(self) -> dict:
        return {f"{b}/{n}": c.lock_entry() for b, nodes in self.choices.items() for n, c in nodes.items()}


@dataclass(frozen=True)
class Planned:
    lowered: Lowered
    plans: dict[str, dict]  # bucket name -> plan JSON whose launches name kernel specs by index
    specs: dict[str, tuple]  # bucket name -> its KernelSpecs


@dataclass(frozen=True)
class Compiled:
    planned: Planned
    plans: dict[str, dict]  # plan JSON whose launches name compiled kernels by id
    kernels: dict  # id -> CompiledKernel
    compiled: int
    cached: int


def ingest_stage(model_dir: Path, config: BuildConfig, target: Target) -> Ingested:
    spec = ingest.read_spec(model_dir)
    if config.tensor_parallel_size > 1:
        check_divisible(spec, config.tensor_parallel_size)
    dtype = config.dtype or spec.checkpoint_dtype
    max_seq_len = min(config.max_seq_len, spec.max_position_embeddings)
    scheme = build_scheme(model_dir, config.quantize, target)
    if scheme is not None and config.tensor_parallel_size > 1:
        check_fp8_groups(spec, config.tensor_parallel_size, scheme.group_size)
    checkpoint = ingest.scan_checkpoint(model_dir)
    weights = ingest.read_weights(model_dir, spec, ingest.DTYPES[dtype], checkpoint)
    if config.quantize:
        weights = quantized_linears(weights)
    weights.update({name: constant(t, name) for name, t in model.rope_tables(spec, max_seq_len).items()})
    toolchain = toolchain_versions(target)
    return Ingested(model_dir, config, target, spec, dtype, max_seq_len, weights, ingest.tokenizer_files(model_dir),
                    toolchain, build_key(checkpoint.digest, config, target, toolchain), scheme)


def trace_stage(ingested: Ingested) -> Traced:
    i = ingested
    if i.tensor_parallel_size == 1:
        return Traced(i, model.trace(i.spec, i.weights))
    return Traced(i, model.trace(i.rank_spec, rank_weights(i.weights, i.spec, i.tensor_parallel_size)[0], i.tensor_parallel_size))


def fuse_stage(traced: Traced) -> Fused:
    i = traced.ingested
    if i.tensor_parallel_size == 1:
        weights = dict(i.weights)
        log = run_passes(traced.graph, weights)
        return Fused(i, traced.graph, weights, tuple(log))
    # each rank's weights go through the same passes (merged q/k/v of its shards, ...); the graphs must agree
    ranks = []
    for rank, weights in enumerate(rank_weights(i.weights, i.spec, i.tensor_parallel_size)):
        graph = traced.graph if rank == 0 else model.trace(i.rank_spec, weights, i.tensor_parallel_size)
        log = run_passes(graph, weights)
        if rank and graph.code != traced.graph.code:
            raise AssertionError(f"tensor-parallel rank {rank}'s fused graph differs from rank 0's")
        ranks.append((weights, log))
    return Fused(i, traced.graph, ranks[0][0], tuple(ranks[0][1]), tuple(w for w, _ in ranks))


def lower_stage(fused: Fused) -> Lowered:
    i = fused.ingested
    runs = {b.name: meta_run(fused.graph, b, fused.weights, i.kv_layout, i.max_blocks, i.spec.vocab_size)
            for b in buckets(i.config.max_batch_size, i.config.max_num_batched_tokens)}
    choices = {name: lower_bucket(run, i.target, i.config.op_priority) for name, run in runs.items()}
    return Lowered(fused, choices, runs)


def plan_stage(lowered: Lowered) -> Planned:
    fused, i = lowered.fused, lowered.fused.ingested
    plans, specs = {}, {}
    for bucket in buckets(i.config.max_batch_size, i.config.max_num_batched_tokens):
        plans[bucket.name], found = plan_bucket(fused.graph, bucket, lowered.runs[bucket.name], i.target,
                                                lowered.choices[bucket.name], i.max_blocks, i.spec.vocab_size)
        specs[bucket.name] = tuple(found)
    return Planned(lowered, plans, specs)


def compile_stage(planned: Planned, count: Callable[[int, int], None] | None = None) -> Compiled:
    """`count(done, total)` after each distinct kernel is compiled or loaded from the cache."""
    if not any(planned.specs.values()):
        return Compiled(planned, dict(planned.plans), {}, 0, 0)
    from llmc.artifacts.kernel_cache import KernelCache

    from .compile import compile_all

    names = list(planned.plans)
    flat = [spec for name in names for spec in planned.specs[name]]
    progress = None if count is None else (lambda done, total, spec, hit: count(done, total))
    kernels, stats = compile_all(flat, KernelCache(), progress)
    plans, start = {}, 0
    for name in names:
        count = len(planned.specs[name])
        plans[name] = with_kernel_ids(planned.plans[name], list(stats.ids[start:start + count]))
        start += count
    return Compiled(planned, plans, kernels, stats.compiled, stats.cached)


def dump(value) -> object:
    """A stage's value as JSON-friendly data (graphs as code, weights as shape/dtype/origin)."""
    if isinstance(value, torch.fx.GraphModule):
        return value.code
    if hasattr(value, "make") and hasattr(value, "doc"):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch."), "from": value.doc}
    if isinstance(value, Choice):
        return value.lock_entry()
    if isinstance(value, Target):
        return value.name
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: dump(getattr(value, f.name)) for f in fields(value) if f.repr}  # repr=False: not stage data
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
