"""`llmc bench BUNDLE`: latency as `vllm bench latency` reports it, plus the floor; or throughput."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click


@click.command("bench")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto", show_default=True,
              help="auto: the backend the bundle was built for.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--input-len", type=int, default=32, show_default=True, help="Prompt tokens per request.")
@click.option("--output-len", type=int, default=128, show_default=True, help="Generated tokens per request.")
@click.option("--num-iters-warmup", type=int, default=10, show_default=True)
@click.option("--num-iters", type=int, default=30, show_default=True)
@click.option("--throughput", is_flag=True, help="Run --num-prompts requests through continuous batching instead.")
@click.option("--num-prompts", type=int, default=64, show_default=True, help="Requests in --throughput mode.")
@click.option("--max-concurrency", type=int, default=None,
              help="--throughput: at most this many requests run at once (default: the bundle's --max-batch-size).")
@click.option("--no-overlap", is_flag=True, help="--throughput: schedule each step only after the previous one's tokens are read.")
@click.option("--no-prefix-caching", is_flag=True,
              help="--throughput: compute every prompt in full (no KV blocks shared by content).")
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True,
              help="Fraction of free GPU memory the KV cache may take.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random prompts.")
@click.option("--verify", type=click.Choice(["full", "fast", "none"]), default="full", show_default=True,
              help="How the bundle is checked at load (full: every sha256).")
@click.option("--output-json", type=click.Path(path_type=Path), help="Also write every number to this JSON file.")
def bench(bundle: Path, device: str, batch_size: int, input_len: int, output_len: int, num_iters_warmup: int,
          num_iters: int, throughput: bool, num_prompts: int, max_concurrency: int | None, no_overlap: bool,
          no_prefix_caching: bool, gpu_memory_utilization: float, seed: int, verify: str,
          output_json: Path | None) -> None:
    """Measure BUNDLE: average and percentile latency of a batch, time to first token, decode ms per
    step as a multiple of the hardware floor, tokens/s and load time; or, with --throughput,
    requests/s and tokens/s of N requests served with continuous batching."""
    from llmc.artifacts import Bundle
    from llmc.runtime import bench as b

    cfg = b.BenchConfig(batch_size, input_len, output_len, num_iters_warmup, num_iters, seed)
    with Bundle.open(bundle, verify=verify) as opened:
        device = opened.manifest["target"]["backend"] if device == "auto" else device
        report = {"bundle": str(bundle), "device": device, "target": opened.manifest["target"]["name"]}
        if throughput:
            report["throughput"] = _throughput(opened, bundle, device, gpu_memory_utilization, num_prompts, cfg, verify,
                                               max_concurrency, not no_overlap, not no_prefix_caching)
            lines = b.format_throughput(report["throughput"])
        else:
            backend = b.open_backend(opened, device, gpu_memory_utilization)
            try:
                load = {"process_to_ready_s": b.process_uptime(),
                        "backend_open_s": backend.load_summary.get("load_seconds"), **backend.load_summary}
                measure = getattr(backend, "measure_copy_bandwidth", None)
                bandwidth = measure() if measure is not None else None
                plans = {name: opened.plan(name) for name in opened.plans()}
                result = b.run_latency(backend, plans, opened.manifest, cfg, weight_bytes=b.weight_bytes(opened),
                                       bandwidth=bandwidth)
            finally:
                backend.close()
            report.update(load=load, latency=result)
            lines = b.format_latency(result) + [b.format_load(load)]
    for line in lines:
        click.echo(line)
    if output_json is not None:
        output_json.parent.mkdir(parents=True, exist_ok=True)
        output_json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def _throughput(opened, path: Path, device: str, utilization: float, num_prompts: int, cfg, verify: str,
                max_concurrency: int | None, overlap: bool, prefix_caching: bool) -> dict:
    from llmc.errors import UserError
    from llmc.runtime import bench as b
    from llmc.runtime.engine import Engine

    if max_concurrency is not None and max_concurrency < 1:
        raise UserError(f"--max-concurrency must be >= 1, got {max_concurrency}")
    options = {"gpu_memory_utilization": utilization} if device != "cpu" else {}
    start = time.perf_counter()
    engine = Engine.load(path, device=device, verify=verify, max_num_seqs=max_concurrency, overlap=overlap,
                         enable_prefix_caching=prefix_caching, **options)
    try:
        load_s = time.perf_counter() - start
        vocab = opened.manifest["model"]["vocab_size"]
        generate = b.engine_generate(engine)
        generate(b.random_prompts(min(num_prompts, 4), cfg.input_len, vocab, cfg.seed + 1), min(cfg.output_len, 4))
        result = b.run_throughput(generate, num_prompts, cfg.input_len, cfg.output_len, vocab, cfg.seed)
    finally:
        engine.close()
    return {**result, "engine_load_s": load_s, "load_summary": engine.load_summary,
            "max_concurrency": engine.max_num_seqs, "overlap": overlap, "prefix_caching": prefix_caching}
