"""The write stage: everything a bundle holds as one value, then the bundle on disk.

Weights stream into `weights/model.safetensors` one tensor at a time (header first, digested as
written); plans, lock, kernels, tokenizer and self-test are small JSON or binaries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

import llmc
from llmc.artifacts import BundleWriter
from llmc.artifacts.safetensors_stream import Entry

from . import ingest
from .compile import kernel_index
from .stages import Compiled, Fused
from .weights import load

ST_DTYPES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.int32: "I32", torch.int64: "I64",
             torch.float64: "F64", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.int16: "I16",
             torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}


@dataclass(frozen=True)
class BundleContents:
    compiled: Compiled
    selftest: dict

    @property
    def plans(self) -> dict:
        return self.compiled.plans

    @property
    def weights(self) -> dict:
        return self.compiled.planned.lowered.fused.weights


def contents(compiled: Compiled) -> BundleContents:
    from .selftest import selftest

    fused = compiled.planned.lowered.fused
    return BundleContents(compiled, selftest(fused if not fused.rank_weights else _whole_model(fused)))


def _whole_model(fused: Fused) -> Fused:
    """The self-test's reference for a tensor-parallel build: the unsharded model's graph (one process
    cannot run the ranks' collectives), which the ranks together must match: its FP8 linears round their
    activations as the ranks do (`per_rank_activations`)."""
    from . import model
    from .passes import PassContext, apply_rules, run_passes
    from .passes.fp8_linears import per_rank_activations

    size = fused.ingested.tensor_parallel_size
    i = dataclasses.replace(fused.ingested, config=dataclasses.replace(fused.ingested.config, tensor_parallel_size=1))
    graph, weights = model.trace(i.spec, i.weights), dict(i.weights)
    if i.quantization is not None:
        run_passes(graph, weights, stop_after="fp8_linears")
        apply_rules(graph, per_rank_activations(size), PassContext(weights))
        graph.recompile()
    return Fused(i, graph, weights, ())


def write_bundle(out: Path, c: BundleContents) -> dict:
    """Write the bundle at `out` (atomically); return its manifest."""
    i = c.compiled.planned.lowered.fused.ingested
    spec, config, target = i.spec, i.config, i.target
    with BundleWriter(out) as w:
        files = {rel: [_entry(name, weight) for name, weight in weights.items()] for rel, weights in weight_files(c)}
        if len(files) > 1:  # the ranks' files side by side: one weight's shards one after another, sharing its load
            w.write_safetensors_side_by_side(files)
        else:
            w.write_safetensors(*next(iter(files.items())))
        for name, plan in sorted(c.plans.items()):
            w.write_json(f"plans/{name}.json", plan)
        w.write_json("impls.lock.json", {"nodes": dict(sorted(c.compiled.planned.lowered.lock.items()))})
        if c.compiled.kernels:
            for kernel in sorted(c.compiled.kernels.values(), key=lambda k: k.id):
                w.write_bytes(kernel.file, kernel.binary)
            w.write_json("kernels/index.json", kernel_index(c.compiled.kernels.values()))
        for name, path in sorted(i.tokenizer.items()):
            if name in ("tokenizer_config.json", "generation_config.json"):
                w.write_json(f"tokenizer/{name}", _without_paths(ingest.read_json(path)))
            else:
                w.copy_file(f"tokenizer/{name}", path)
        w.write_json("selftest.json", c.selftest)
        model_fields = {
            **spec.to_json(), "dtype": i.dtype, "sliding_window": max(spec.sliding_windows, default=0),
            "bos_token_id": spec.bos_token_id if isinstance(spec.bos_token_id, int) else None,
        }
        decode = sorted(p["num_tokens"] for p in c.plans.values() if p["kind"] == "decode")
        prefill = sorted(p["num_tokens"] for p in c.plans.values() if p["kind"] == "prefill")
        return w.commit({
            "llmc_version": llmc.__version__,
            "target": {"name": target.name, "backend": target.backend, "arch": target.arch, "warp_size": target.warp_size},
            "model": model_fields,
            "build": {**config.manifest_fields(i.dtype, i.max_seq_len), "target": target.name,
                      "decode_buckets": decode, "prefill_buckets": prefill},
            "kv_cache": i.kv_layout,
            "toolchain": i.toolchain,
            "build_key": i.build_key,
            **({"quantization": i.quantization.to_json()} if i.quantization else {}),
            **({"parallel": {"tensor_parallel_size": i.tensor_parallel_size}} if i.tensor_parallel_size > 1 else {}),
        })


def weight_files(c: BundleContents) -> list[tuple[str, dict]]:
    """(file, its weights): weights/model.safetensors, or with tensor parallelism one such file per rank
    (weights/rank<r>/model.safetensors), the same names in each, each tensor sharded as it is written."""
    ranks = c.compiled.planned.lowered.fused.rank_weights
    if not ranks:
        return [("weights/model.safetensors", c.weights)]
    for r, weights in enumerate(ranks):  # so the files' tensors line up and each weight is loaded once
        if [(n, w.dtype) for n, w in weights.items()] != [(n, w.dtype) for n, w in ranks[0].items()]:
            raise AssertionError(f"tensor-parallel rank {r}'s weights differ from rank 0's in names or dtypes")
    return [(f"weights/rank{r}/model.safetensors", weights) for r, weights in enumerate(ranks)]


def _entry(name: str, weight) -> Entry:
    def data() -> memoryview:
        tensor = load(weight).contiguous().reshape(-1)  # flat: a 0-d tensor cannot be viewed as bytes
        return tensor.view(torch.uint8).numpy().data if tensor.numel() else memoryview(b"")

    return Entry(name, ST_DTYPES[weight.dtype], tuple(weight.shape), data)


def _without_paths(config: dict) -> dict:
    """Tokenizer files as JSON, less the fields where Hugging Face records local paths."""
    return {k: v for k, v in config.items() if k not in ("name_or_path", "tokenizer_file", "_name_or_path")}
