"""`llmc build`: ingest -> trace -> fuse -> lower + plan -> compile -> selftest -> write.

Each stage is one call below; `stop_after` ends the pipeline after a named stage and returns
what it has, for debugging and tests.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import safetensors.torch
import torch

import llmc
from llmc.artifacts import BundleWriter, check_output_path
from llmc.errors import UserError

import llmc.kernels  # noqa: F401  (registers every kernel impl, so lowering sees them all)

from . import ingest, model, rope
from .config import BuildConfig
from .passes import run_passes
from .plan import Bucket, buckets, plan_bucket
from .target import Target, get_target

SELFTEST_TOP = 5


@dataclass
class BuildResult:
    out: Path
    manifest: dict = field(default_factory=dict)
    kernels_compiled: int = 0
    kernels_cached: int = 0
    plans: list[str] = field(default_factory=list)
    pass_log: list[str] = field(default_factory=list)


Progress = Callable[[str], contextlib.AbstractContextManager]


def _quiet(stage: str):
    return contextlib.nullcontext()


def build(model_dir, out, config: BuildConfig, progress: Progress | None = None) -> BuildResult:
    stage = progress or _quiet
    model_dir, out = Path(model_dir), check_output_path(out)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: not a directory; give the path of a Hugging Face model directory")
    target = get_target(config.target)
    with stage("ingest"):
        spec = ingest.read_spec(model_dir)
        dtype = config.dtype or spec.checkpoint_dtype
        max_seq_len = min(config.max_seq_len, spec.max_position_embeddings)
        params = ingest.read_weights(model_dir, spec, ingest.DTYPES[dtype])
        params[model.ROPE_TABLE] = rope.cos_sin_cache(spec.head_dim, spec.rope_theta, spec.rope_scaling, max_seq_len)
        tokenizer = ingest.tokenizer_files(model_dir)
    with stage("trace"):
        gm = model.trace(spec, params)
    with stage("fuse"):
        pass_log = run_passes(gm, params)
    kv_layout = {"num_layers": spec.num_layers, "block_size": config.kv_block_size,
                 "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim, "dtype": dtype}
    max_blocks = -(-max_seq_len // config.kv_block_size)
    compiler = _KernelCollector(target)
    plans, lock = {}, {}
    with stage("lower + plan"):
        for bucket in buckets(config.max_batch_size, config.max_num_batched_tokens):
            plan, choices = plan_bucket(gm, bucket, params, target, config.op_priority, kv_layout, max_blocks, compiler.params)
            plans[bucket.name] = plan
            lock.update({k: c.lock_entry() for k, c in choices.items()})
    result = BuildResult(out, pass_log=pass_log, plans=list(plans))
    with stage("compile"):
        kernels = compiler.compile(plans, result)
    with stage("selftest"):
        selftest = _selftest(gm, params, kv_layout, spec, tokenizer, config)
    with stage("write"):
        result.manifest = _write(out, config, target, spec, dtype, max_seq_len, params, plans, lock, kernels, tokenizer, selftest, model_dir)
    return result


class _KernelCollector:
    """Turns launches into plan entries while planning, then compiles every distinct kernel once."""

    def __init__(self, target: Target):
        self.target = target
        self.specs: list = []

    def params(self, launch, refs, outs) -> dict:
        from llmc.kernels.launch import Out

        from .compile import arg_type, spec_from_launch

        values = [outs[a.index] if isinstance(a, Out) else a for a in launch.args]
        types = [arg_type(v) for v in values]
        params = []
        for value, ty in zip(values, types):
            if ty == "constexpr":
                continue
            if isinstance(value, torch.Tensor):
                params.append(refs.of(value))
            else:
                params.append({"scalar": value, "type": ty})
        self.specs.append(spec_from_launch(launch, types, self.target.name))
        return {"kernel": len(self.specs) - 1, "grid": list(launch.grid3), "params": params}

    def compile(self, plans: dict, result: BuildResult) -> dict:
        if not self.specs:
            return {}
        from llmc.artifacts.kernel_cache import KernelCache

        from .compile import compile_all

        kernels, stats = compile_all(self.specs, KernelCache())
        for plan in plans.values():
            for step in plan["steps"]:
                for launch in step.get("launches", ()):
                    launch["kernel"] = stats.ids[launch["kernel"]]
        result.kernels_compiled, result.kernels_cached = stats.compiled, stats.cached
        return kernels


def _selftest(gm, params, kv_layout, spec, tokenizer, config) -> dict:
    from .reference import prefill_logits

    ids = _selftest_ids(tokenizer, spec, config.selftest_prompt)
    logits = prefill_logits(gm, params, kv_layout, spec.num_layers, ids).float()
    top = torch.topk(logits, min(SELFTEST_TOP, logits.shape[-1]), dim=-1)
    return {
        "prompt_token_ids": ids,
        "top_token_ids": top.indices.tolist(),
        "top_logits": [[float(f"{v:.5g}") for v in row] for row in top.values.tolist()],  # few digits: host-independent
        "dtype": kv_layout["dtype"],
    }


def _selftest_ids(tokenizer: dict, spec, prompt: str) -> list[int]:
    if "tokenizer.json" in tokenizer:
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(str(tokenizer["tokenizer.json"])).encode(prompt).ids
        if ids and all(0 <= i < spec.vocab_size for i in ids):
            return ids[:16]
    return [(7 * i + 1) % spec.vocab_size for i in range(8)]


def _build_key(model_dir: Path, config: BuildConfig, target: Target, toolchain: dict) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        if path.suffix in (".json", ".safetensors", ".model", ".txt"):
            h.update(path.name.encode() + b"\0")
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    h.update(chunk)
    h.update(repr((sorted(config.manifest_fields(config.dtype or "", config.max_seq_len).items()), target.name, sorted(toolchain.items()))).encode())
    return h.hexdigest()


def _toolchain(target: Target) -> dict:
    import triton

    versions = {"llmc": llmc.__version__, "torch": torch.__version__.split("+")[0], "triton": triton.__version__}
    if target.backend == "cuda":
        from .compile import toolchain

        versions["ptxas"] = toolchain(target.name).ptxas
    return versions


def _without_paths(config: dict) -> dict:
    """Tokenizer files as JSON, less the fields where Hugging Face records local paths."""
    return {k: v for k, v in config.items() if k not in ("name_or_path", "tokenizer_file", "_name_or_path")}


def _write(out, config, target, spec, dtype, max_seq_len, params, plans, lock, kernels, tokenizer, selftest, model_dir) -> dict:
    from .compile import kernel_index

    toolchain = _toolchain(target)
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", safetensors.torch.save({k: params[k].contiguous() for k in sorted(params)}))
        for name, plan in sorted(plans.items()):
            w.write_json(f"plans/{name}.json", plan)
        w.write_json("impls.lock.json", {"nodes": dict(sorted(lock.items()))})
        if kernels:
            for kernel in sorted(kernels.values(), key=lambda k: k.id):
                w.write_bytes(kernel.file, kernel.binary)
            w.write_json("kernels/index.json", kernel_index(kernels.values()))
        for name, path in sorted(tokenizer.items()):
            if name in ("tokenizer_config.json", "generation_config.json"):
                w.write_json(f"tokenizer/{name}", _without_paths(ingest.read_json(path)))
            else:
                w.copy_file(f"tokenizer/{name}", path)
        w.write_json("selftest.json", selftest)
        model_fields = {
            **spec.to_json(), "dtype": dtype, "sliding_window": max(spec.sliding_windows, default=0),
            "bos_token_id": spec.bos_token_id if isinstance(spec.bos_token_id, int) else None,
        }
        decode = sorted(p["num_tokens"] for p in plans.values() if p["kind"] == "decode")
        prefill = sorted(p["num_tokens"] for p in plans.values() if p["kind"] == "prefill")
        return w.commit({
            "llmc_version": llmc.__version__,
            "target": {"name": target.name, "backend": target.backend, "arch": target.arch, "warp_size": target.warp_size},
            "model": model_fields,
            "build": {**config.manifest_fields(dtype, max_seq_len), "target": target.name,
                      "decode_buckets": decode, "prefill_buckets": prefill},
            "kv_cache": {"num_layers": spec.num_layers, "block_size": config.kv_block_size,
                         "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim, "dtype": dtype},
            "toolchain": toolchain,
            "build_key": _build_key(model_dir, config, target, toolchain),
        })


__all__ = ["BuildConfig", "BuildResult", "Bucket", "build"]
