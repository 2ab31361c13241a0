"""`llmc build MODEL --target T -o OUT`."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import click

from llmc.aot.config import BuildConfig


@click.command("build")
@click.argument("model")
@click.option("--target", default="cpu", show_default=True, help="cpu, sm80, sm89, sm90 or gfx942.")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default=None, help="Default: the checkpoint's.")
@click.option("--max-batch-size", default=BuildConfig.max_batch_size, show_default=True, help="Largest decode batch (sequences per step).")
@click.option("--max-seq-len", default=BuildConfig.max_seq_len, show_default=True, help="Context length: prompt plus generated tokens.")
@click.option("--kv-block-size", default=BuildConfig.kv_block_size, show_default=True, help="Tokens per KV-cache block.")
@click.option("--max-num-batched-tokens", default=BuildConfig.max_num_batched_tokens, show_default=True, help="Largest prefill step, in tokens.")
@click.option("--revision", default=None, help="For a Hugging Face id: the branch, tag or commit to build.")
@click.option("--op-priority", default="", help="Per-op impl order, e.g. rms_norm=native,linear=triton_gemm|triton_gemv.")
@click.option("--no-cache", is_flag=True, help="Build every stage even when the bundle cache holds this build.")
@click.option("--quantize", type=click.Choice(["fp8"]), default=None,
              help="Quantize a 16-bit checkpoint's linears: fp8 e4m3 weights per channel, activations per token.")
@click.option("--tensor-parallel-size", "-tp", default=1, show_default=True,
              help="Split the weights across this many GPUs (one process each); it must divide the heads, vocab and MLP width.")
def build(model, target, out, dtype, max_batch_size, max_seq_len, kv_block_size, max_num_batched_tokens, revision, op_priority, no_cache,
          quantize, tensor_parallel_size):
    """Compile the Hugging Face checkpoint MODEL (a directory, or an id such as Qwen/Qwen3-0.6B) into a bundle."""
    from llmc.aot.build import build as run_build
    from llmc.aot.model_source import resolve_model_dir
    from llmc.aot.target import parse_op_priority

    model = resolve_model_dir(model, revision)

    config = BuildConfig(
        target=target, dtype=dtype, max_batch_size=max_batch_size, max_seq_len=max_seq_len,
        kv_block_size=kv_block_size, max_num_batched_tokens=max_num_batched_tokens,
        op_priority=parse_op_priority(op_priority), quantize=quantize, tensor_parallel_size=tensor_parallel_size,
    )
    start = time.perf_counter()
    result = run_build(model, out, config, progress=_progress(), use_cache=not no_cache)
    manifest = result.manifest
    m = manifest["model"]
    click.echo(
        f"built {out} for {manifest['target']['name']} in {time.perf_counter() - start:.1f} s: "
        f"{m['architecture']} {m['dtype']}, {m['num_layers']} layers, "
        f"{_ranks(manifest)}{len(result.plans)} plans, "
        f"{result.kernels_compiled} kernels compiled, {result.kernels_cached} from the cache"
    )
    click.echo(f"root digest {manifest['root_digest']}")
    if result.from_cache:
        click.echo(f"from the bundle cache (build key {manifest['build_key'][:16]}…); --no-cache builds every stage again")
    _warn_if_clamped(click.get_current_context(), max_seq_len, manifest)


def _ranks(manifest: dict) -> str:
    size = manifest.get("parallel", {}).get("tensor_parallel_size", 1)
    return f"weights split across {size} ranks, " if size > 1 else ""


def _warn_if_clamped(ctx: click.Context, asked: int, manifest: dict) -> None:
    """A context length the user asked for and did not get is said, not silently clamped."""
    used = manifest["build"]["max_seq_len"]
    if ctx.get_parameter_source("max_seq_len") is click.core.ParameterSource.COMMANDLINE and used < asked:
        click.echo(f"warning: --max-seq-len {asked} is above the model's max_position_embeddings; the bundle's context "
                   f"is {used} tokens (a longer context needs a model trained or rope-scaled for it)", err=True)


def _progress(console=None):
    """A spinner per stage on a terminal, with a kernel counter while compiling; nothing when piped."""
    if console is None:
        if not sys.stderr.isatty():
            return None
        from rich.console import Console

        console = Console(stderr=True)

    @contextlib.contextmanager
    def stage(name: str):
        start, counted = time.perf_counter(), []
        with console.status(f"{name}...") as status:
            def count(done: int, total: int) -> None:
                counted[:] = [done, total]
                status.update(f"{name} {done}/{total}")

            yield count
        what = f"{name} {counted[0]}/{counted[1]}" if counted else name
        console.print(f"[green]✓[/green] {what} ({time.perf_counter() - start:.1f} s)")

    return stage
