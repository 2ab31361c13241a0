"""Build benchmark: wall time and peak RSS per stage of `llmc build`, at real model shapes, on this machine.

    python benchmarks/build_bench.py --models qwen3-0.6b llama-3.1-8b --target sm90 --workdir /tmp/llmc-bench
    python benchmarks/build_bench.py --models qwen3-30b-a3b --layers 16   # the first 16 of its 48 layers

For each model it writes a checkpoint of the real config's shapes, tensor by tensor (random bf16 values,
never a model in memory, sharded at 5 GB like the Hub's), then builds it in fresh child processes:
`cold` (empty kernel and bundle caches; it fills both), `hit` (the bundle cache holds the build), then
`warm` (kernels cached, `--no-cache`; the bundle cache entry is dropped first, so the disk never holds
more than the checkpoint and one bundle). `--layers N` keeps the first N layers of each config (a
checkpoint too large for the disk, measured per layer). Each child reports every stage's wall time and
its peak RSS when the stage ended (`VmHWM`, so stages are cumulative); the machine's load average is
printed beside each run, since other work on a shared machine slows a build. Results go to stdout as a
markdown table and to `<workdir>/build_bench.json`. `--keep` keeps the checkpoints (they are large: 16 GB
for an 8B model).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

# the real configs' shapes (Hugging Face config.json fields), bf16
MODELS = {
    "qwen3-0.6b": dict(architectures=["Qwen3ForCausalLM"], hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                       max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "llama-3.1-8b": dict(architectures=["LlamaForCausalLM"], hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                         rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                       "original_max_position_embeddings": 8192}),
    "qwen3-30b-a3b": dict(architectures=["Qwen3MoeForCausalLM"], hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
                          num_attention_heads=32, num_key_value_heads=4, head_dim=128, vocab_size=151936,
                          max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                          num_experts=128, num_experts_per_tok=8, moe_intermediate_size=768, norm_topk_prob=True,
                          decoder_sparse_step=1, mlp_only_layers=[]),
}
SHARD_BYTES = 5 << 30

_CHILD = """
import json, os, sys, time, contextlib
from llmc.aot.build import build
from llmc.aot.config import BuildConfig
from llmc.aot.target import parse_op_priority
stages, start = [], time.perf_counter()
def rss():  # VmHWM: this process image's peak (ru_maxrss would keep the forking parent's across exec)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
@contextlib.contextmanager
def progress(name):
    t = time.perf_counter()
    yield
    stages.append({"stage": name, "seconds": round(time.perf_counter() - t, 2), "peak_rss": rss()})
config = BuildConfig(target=sys.argv[3], max_seq_len=int(sys.argv[4]))
result = build(sys.argv[1], sys.argv[2], config, progress=progress, use_cache=sys.argv[5] == "cache")
print(json.dumps({"stages": stages, "total": round(time.perf_counter() - start, 2), "peak_rss": rss(),
                  "from_cache": result.from_cache, "compiled": result.kernels_compiled, "cached": result.kernels_cached}))
"""


def tensor_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor of the checkpoint, by its Hugging Face name."""
    h, i, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim", h // c["num_attention_heads"])
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    if not c["tie_word_embeddings"]:
        shapes["lm_head.weight"] = (v, h)
    qk_norm = c["architectures"][0].startswith("Qwen3")
    for layer in range(c["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes.update({p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                       p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                       p + "self_attn.v_proj.weight": (kv, h), p + "self_attn.o_proj.weight": (h, q)})
        if qk_norm:
            shapes.update({p + "self_attn.q_norm.weight": (hd,), p + "self_attn.k_norm.weight": (hd,)})
        if "num_experts" in c:
            e, mi = c["num_experts"], c["moe_intermediate_size"]
            shapes[p + "mlp.gate.weight"] = (e, h)
            for x in range(e):
                shapes.update({p + f"mlp.experts.{x}.gate_proj.weight": (mi, h), p + f"mlp.experts.{x}.up_proj.weight": (mi, h),
                               p + f"mlp.experts.{x}.down_proj.weight": (h, mi)})
        else:
            shapes.update({p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h), p + "mlp.down_proj.weight": (h, i)})
    return shapes


def model_config(name: str, layers: int | None) -> dict:
    config = {**MODELS[name], "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    if layers is not None:
        config["num_hidden_layers"] = min(layers, config["num_hidden_layers"])
    return config


def write_checkpoint(config: dict, out: Path) -> int:
    """The checkpoint of `config`'s shapes at `out`, one tensor in memory at a time; its size in bytes."""
    import torch

    from llmc.artifacts.safetensors_stream import Entry, write

    shapes = tensor_shapes(config)
    torch.manual_seed(0)
    pool = (torch.randn(1 << 24) * 0.02).to(torch.bfloat16)  # values are drawn from one random pool

    def data(name, shape):
        def make():
            n = math.prod(shape)
            if name.endswith("norm.weight"):
                return torch.ones(n, dtype=torch.bfloat16).view(torch.uint8).numpy().data
            start = zlib.crc32(name.encode()) % pool.numel()
            if start + n <= pool.numel():  # a view: repeating the pool for each small expert tensor was most of the time
                values = pool[start:start + n]
            else:
                values = pool.repeat(-(-(start + n) // pool.numel()))[start:start + n]
            return values.contiguous().view(torch.uint8).numpy().data
        return make

    shards, current, size = [], [], 0
    for tensor, shape in shapes.items():  # shards of about SHARD_BYTES, like save_pretrained's
        nbytes = math.prod(shape) * 2
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = [], 0
        current.append((tensor, shape))
        size += nbytes
    shards.append(current)
    out.mkdir(parents=True, exist_ok=True)
    weight_map, total = {}, 0
    for n, shard in enumerate(shards, 1):
        file = f"model-{n:05d}-of-{len(shards):05d}.safetensors"
        _, written = write(out / file, [Entry(t, "BF16", s, data(t, s)) for t, s in shard])
        weight_map.update({t: file for t, _ in shard})
        total += written
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(config))
    return total


def run_build(model: Path, out: Path, cache: Path, target: str, max_seq_len: int, use_cache: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["LLMC_CACHE_DIR"] = str(cache)
    load = os.getloadavg()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(model), str(out), target, str(max_seq_len),
                           "cache" if use_cache else "no-cache"], env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"build of {model} failed:\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load_before": [round(x, 2) for x in load],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def bench(name: str, workdir: Path, target: str, max_seq_len: int, keep: bool, layers: int | None = None) -> dict:
    config = model_config(name, layers)
    label = name if config["num_hidden_layers"] == MODELS[name]["num_hidden_layers"] else \
        f"{name} ({config['num_hidden_layers']} of {MODELS[name]['num_hidden_layers']} layers)"
    name = name if label == name else f"{name}-{config['num_hidden_layers']}l"
    model, cache = workdir / name, workdir / f"{name}-cache"
    shutil.rmtree(cache, ignore_errors=True)
    start = time.perf_counter()
    size = write_checkpoint(config, model) if not (model / "config.json").exists() else sum(
        p.stat().st_size for p in model.glob("*.safetensors"))
    written = round(time.perf_counter() - start, 1)
    runs = {}
    for run, use_cache in (("cold", True), ("hit", True), ("warm", False)):  # cold stores the bundle cache entry
        if run == "warm":
            shutil.rmtree(cache / "bundles", ignore_errors=True)
        out = workdir / f"{name}-{run}.llmc"
        runs[run] = run_build(model, out, cache, target, max_seq_len, use_cache)
        shutil.rmtree(out, ignore_errors=True)
    if not keep:
        shutil.rmtree(model, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    return {"model": label, "checkpoint_bytes": size, "checkpoint_written_s": written, "target": target, "runs": runs}


def table(results: list[dict]) -> str:
    rows = ["| model | checkpoint | run | total s | peak RSS | stages (s, peak RSS at end) | load avg (1 min) |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        for run, v in r["runs"].items():
            stages = ", ".join(f"{s['stage']} {s['seconds']} ({s['peak_rss'] / 2**30:.2f} GB)" for s in v["stages"])
            rows.append(f"| {r['model']} | {r['checkpoint_bytes'] / 1e9:.2f} GB | {run} | {v['total']} | "
                        f"{v['peak_rss'] / 2**30:.2f} GB | {stages} | {v['load_before'][0]} → {v['load_after'][0]} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen3-0.6b"], choices=sorted(MODELS))
    parser.add_argument("--target", default="sm90")
    parser.add_argument("--max-seq-len", type=int, default=2048)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/llmc-build-bench"))
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    parser.add_argument("--layers", type=int, help="keep only the first N layers of each model (its per-layer shapes)")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = [bench(m, args.workdir, args.target, args.max_seq_len, args.keep, args.layers) for m in args.models]
    (args.workdir / "build_bench.json").write_text(json.dumps(results, indent=1))
    print(f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB memory")
    print(table(results))


if __name__ == "__main__":
    main()
