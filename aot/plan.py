"""Planning: one static launch plan per bucket, with activations placed in one arena.

For a bucket (tokens, sequences, logits rows) the fused graph is run on meta tensors to learn
every value's shape, each node is lowered, and each output gets an arena offset from a
liveness-based first-fit placement. Kernel impls turn into launches (under the target's launch
context) whose parameters reference buffers, weights, inputs and the KV cache (see docs/FORMAT.md).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.fx

from .ir import op_of
from .ir.ops.collective import Collective
from .kernel_spec import KernelSpec, arg_type, spec_from_launch
from .launch import Launch, Out, launch_context
from .lower import Choice, choose_impl
from llmc.artifacts.plan_schema import step_input_shapes

from .model import STEP_INPUTS
from .target import Target

ALIGN = 256
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16", torch.int32: "int32", torch.int64: "int64",
               torch.float8_e4m3fn: "float8_e4m3fn"}


@dataclass(frozen=True)
class Bucket:
    kind: str  # decode | prefill
    num_tokens: int
    num_seqs: int
    num_logits: int

    @property
    def name(self) -> str:
        return f"decode_b{self.num_tokens}" if self.kind == "decode" else f"prefill_t{self.num_tokens}"


def input_shapes(bucket: Bucket, max_blocks_per_seq: int, vocab_size: int) -> dict[str, tuple[int, ...]]:
    shapes = step_input_shapes(bucket.num_tokens, bucket.num_seqs, bucket.num_logits, max_blocks_per_seq, vocab_size)
    return {name: tuple(shape) for name, shape in shapes.items()}


def _meta(shape, dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


class _Refs:
    """Meta values of a plan and what each one refers to in the bundle."""

    def __init__(self):
        self.by_id: dict[int, dict] = {}
        self._alive: list[torch.Tensor] = []  # an id is only unique while its object lives
        self._by_storage: dict[int, torch.Tensor] = {}

    def base(self, value: torch.Tensor) -> torch.Tensor:
        """A whole bound tensor seen as another dtype (a weight's bytes as uint8) refers to that tensor."""
        if id(value) in self.by_id:
            return value
        bound = self._by_storage.get(value.untyped_storage()._cdata)
        same = bound is not None and value.storage_offset() == 0 and value.nbytes == bound.nbytes
        return bound if same else value

    def bind(self, value: torch.Tensor, ref: dict) -> torch.Tensor:
        self.by_id[id(value)] = ref
        self._alive.append(value)
        self._by_storage.setdefault(value.untyped_storage()._cdata, value)
        return value

    def of(self, value) -> dict:
        if isinstance(value, torch.Tensor):
            return self.by_id[id(self.base(value))]
        if isinstance(value, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in value):
            return {"list": [self.of(v) for v in value]}
        return {"const": list(value) if isinstance(value, tuple) else value}


def _placeholder_value(node, refs: _Refs, bucket: Bucket, shapes, params, kv_shape, kv_dtype, max_blocks):
    kind, _, name = node.meta["ref"].partition(":")
    if kind == "input":
        return refs.bind(_meta(shapes[name], STEP_INPUTS[name]), {"input": name})
    if kind == "weight":
        p = params[name]
        return refs.bind(_meta(p.shape, p.dtype), {"weight": name})
    if kind == "kv":
        which, _, layer = name.partition(":")
        return refs.bind(_meta(kv_shape, kv_dtype), {"kv_cache": which, "layer": int(layer)})
    if name == "max_query_len":
        return 1 if bucket.kind == "decode" else bucket.num_tokens
    raise ValueError(f"unknown placeholder {node.meta['ref']}")


def _place_scratch(launches, refs: _Refs, node, index: int, buffers: dict, lifetimes: dict) -> None:
    """Tensors an impl allocated for itself (neither arguments nor outputs) live in the arena
    for the duration of their node."""
    count = 0
    for launch in launches:
        for value in launch.args:
            if isinstance(value, torch.Tensor) and id(refs.base(value)) not in refs.by_id:
                name, count = f"{node.name}.scratch{count}", count + 1
                buffers[name] = {"shape": list(value.shape), "dtype": DTYPE_NAMES[value.dtype],
                                 "nbytes": value.numel() * value.element_size()}
                lifetimes[name] = (index, index)
                refs.bind(value, {"buffer": name})


def _place(buffers: dict[str, dict], lifetimes: dict[str, tuple[int, int]]) -> int:
    """First-fit by decreasing size; buffers whose lifetimes overlap never share bytes."""
    placed: list[tuple[int, int, int, int]] = []  # offset, end, first, last
    arena = 0
    for name in sorted(buffers, key=lambda n: (-buffers[n]["nbytes"], lifetimes[n][0], n)):
        size = -(-buffers[name]["nbytes"] // ALIGN) * ALIGN
        first, last = lifetimes[name]
        clashes = sorted((o, e) for o, e, f, l in placed if not (l < first or last < f))
        offset = 0
        for o, e in clashes:
            if offset + size <= o:
                break
            offset = max(offset, e)
        buffers[name]["offset"] = offset
        placed.append((offset, offset + size, first, last))
        arena = max(arena, offset + size)
    return arena


def _calls(gm: torch.fx.GraphModule, bucket: Bucket, params: dict, kv_layout: dict, max_blocks_per_seq: int, refs: _Refs,
           vocab_size: int):
    """Run the graph on meta values; yield (node, op, args, result) for every op call, then the output node."""
    shapes = input_shapes(bucket, max_blocks_per_seq, vocab_size)
    kv_shape = (1, kv_layout["block_size"], kv_layout["num_kv_heads"], kv_layout["head_dim"])
    kv_dtype = getattr(torch, kv_layout["dtype"])
    values: dict[torch.fx.Node, object] = {}
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            values[node] = _placeholder_value(node, refs, bucket, shapes, params, kv_shape, kv_dtype, max_blocks_per_seq)
        elif node.op == "call_function" and node.target is operator.getitem:
            values[node] = values[node.args[0]][node.args[1]]
        elif node.op == "call_function":
            op = op_of(node.target)
            args = tuple(torch.fx.node.map_arg(a, lambda n: values[n]) for a in node.args)
            values[node] = op.fake(*args)
            yield node, op, args, values[node]
        elif node.op == "output":
            (result,) = node.args
            yield node, None, (), {k: values[v] for k, v in result.items()}


@dataclass(frozen=True)
class MetaRun:
    """A bucket's graph run once on meta values, shared by lowering and planning."""
    bound: tuple[tuple[torch.Tensor, dict], ...]  # placeholder values and what each refers to
    calls: tuple[tuple, ...]  # what `_calls` yields

    def refs(self) -> _Refs:
        refs = _Refs()
        for value, ref in self.bound:
            refs.bind(value, ref)
        return refs


def meta_run(gm: torch.fx.GraphModule, bucket: Bucket, params: dict, kv_layout: dict, max_blocks_per_seq: int,
             vocab_size: int) -> MetaRun:
    refs = _Refs()
    calls = tuple(_calls(gm, bucket, params, kv_layout, max_blocks_per_seq, refs, vocab_size))
    return MetaRun(tuple((value, refs.by_id[id(value)]) for value in refs._alive), calls)


def lower_bucket(run: MetaRun, target: Target, overrides: dict) -> dict[str, Choice]:
    """The impl of every op node for this bucket's shapes: node name -> Choice."""
    return {node.name: choose_impl(node, args, target, overrides) for node, op, args, _ in run.calls if op is not None}


def plan_bucket(
    gm: torch.fx.GraphModule,
    bucket: Bucket,
    run: MetaRun,
    target: Target,
    choices: dict[str, Choice],
    max_blocks_per_seq: int,
    vocab_size: int,
) -> tuple[dict, list[KernelSpec]]:
    """The plan JSON for one bucket, and the kernel specs its launches name by index ("kernel": i)."""
    refs = run.refs()
    buffers: dict[str, dict] = {}
    lifetimes: dict[str, tuple[int, int]] = {}
    steps, specs = [], []
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    context = target.launch_context()

    def last_use(node) -> int:
        users = [last_use(u) if u.target is operator.getitem else order[u] for u in node.users]
        return max(users, default=order[node])

    for node, op, args, result in run.calls:
        if op is None:
            outputs = {k: refs.of(v)["buffer"] for k, v in result.items()}
            for name in outputs.values():
                lifetimes[name] = (lifetimes[name][0], len(order))
            continue
        outs = [] if result is None else [result] if isinstance(result, torch.Tensor) else list(result)
        out_refs = []
        for i, out in enumerate(outs):
            name = f"{node.name}" if len(outs) == 1 else f"{node.name}.{i}"
            buffers[name] = {"shape": list(out.shape), "dtype": DTYPE_NAMES[out.dtype], "nbytes": out.numel() * out.element_size()}
            lifetimes[name] = (order[node], last_use(node))
            refs.bind(out, {"buffer": name})
            out_refs.append(name)
        impl = choices[node.name].impl
        step = {"node": node.name, "op": op.name, "provider": impl.provider,
                "args": [refs.of(a) for a in args], "outputs": out_refs}
        if impl.launches:
            with launch_context(context):
                launches = impl.fn(*args)
            _place_scratch(launches, refs, node, order[node], buffers, lifetimes)
            for collective in (c for c in launches if isinstance(c, Collective)):  # at most one, before the kernels
                step["collective"] = collective.entry(refs.of, outs)
            step["launches"] = [_launch_entry(launch, refs, outs, target, specs) for launch in launches
                                if not isinstance(launch, Collective)]
        steps.append(step)
    shapes = input_shapes(bucket, max_blocks_per_seq, vocab_size)
    arena = _place(buffers, lifetimes)
    for b in buffers.values():
        del b["nbytes"]
    plan = {
        "name": bucket.name, "kind": bucket.kind, "num_tokens": bucket.num_tokens, "num_seqs": bucket.num_seqs,
        "num_logits": bucket.num_logits, "max_blocks_per_seq": max_blocks_per_seq, "arena_bytes": arena,
        "inputs": {k: {"shape": list(s), "dtype": DTYPE_NAMES[STEP_INPUTS[k]]} for k, s in shapes.items()},
        "buffers": dict(sorted(buffers.items())), "outputs": outputs, "steps": steps,
    }
    return plan, specs


def _launch_entry(launch: Launch, refs: _Refs, outs: list, target: Target, specs: list) -> dict:
    """A launch as plan JSON; its kernel is the index of its spec in `specs` until compilation names it."""
    values = [outs[a.index] if isinstance(a, Out) else a for a in launch.args]
    types = [arg_type(v) for v in values]
    params = []
    for value, ty in zip(values, types):
        if ty == "constexpr":
            continue
        params.append(refs.of(value) if isinstance(value, torch.Tensor) else {"scalar": value, "type": ty})
    specs.append(spec_from_launch(launch, types, target.name))
    return {"kernel": len(specs) - 1, "grid": list(launch.grid3), "params": params}


def with_kernel_ids(plan: dict, ids: list[str]) -> dict:
    """A copy of `plan` whose launches name compiled kernels (`ids[i]` for spec index i)."""
    steps = [{**step, "launches": [{**launch, "kernel": ids[launch["kernel"]]} for launch in step["launches"]]}
             if "launches" in step else step for step in plan["steps"]]
    return {**plan, "steps": steps}


def buckets(max_batch_size: int, max_num_batched_tokens: int) -> list[Bucket]:
    """Decode buckets 1, 2, 4, ... max_batch_size; prefill buckets 16, 32, ... max_num_batched_tokens."""
    decode = sorted({min(2**i, max_batch_size) for i in range(math.ceil(math.log2(max_batch_size)) + 1)})
    smallest = 16
    prefill = sorted({min(smallest * 2**i, max_num_batched_tokens) for i in range(max(1, math.ceil(math.log2(max_num_batched_tokens / smallest)) + 1))})
    return [Bucket("decode", b, b, b) for b in decode] + [
        Bucket("prefill", t, max_batch_size, min(t, max_batch_size)) for t in prefill
    ]
