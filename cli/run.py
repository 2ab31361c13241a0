"""`llmc run BUNDLE --prompt TEXT`: stream one completion to stdout."""

from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("run")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--prompt", required=True, help="The prompt text.")
@click.option("--max-tokens", default=64, show_default=True)
@click.option("--temperature", default=0.0, show_default=True, help="0 is greedy.")
@click.option("--top-p", default=1.0, show_default=True)
@click.option("--top-k", default=0, show_default=True, help="0 is off.")
@click.option("--seed", default=None, type=int)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "hip"]), default="auto", show_default=True,
              help="auto: the backend the bundle was built for.")
@click.option("--gpu-memory-utilization", type=float, default=0.9, show_default=True,
              help="cuda: share of the free GPU memory the KV cache may take.")
@click.option("--verify", type=click.Choice(["full", "fast", "none"]), default="full", show_default=True,
              help="full hashes every file; fast checks the manifest and sizes.")
@click.option("--no-overlap", is_flag=True, help="Prepare each step only after the previous one ends (same output).")
@click.option("--no-prefix-caching", is_flag=True, help="Compute every prompt in full: no KV blocks shared by content.")
def run(bundle, prompt, max_tokens, temperature, top_p, top_k, seed, device, gpu_memory_utilization, verify, no_overlap,
        no_prefix_caching):
    """Generate a completion of PROMPT with BUNDLE, streaming it as it is sampled."""
    from llmc.runtime import Engine, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    start = time.perf_counter()
    options = {"gpu_memory_utilization": gpu_memory_utilization} if device != "cpu" else {}
    engine = Engine.load(bundle, device=device, verify=verify, overlap=not no_overlap,
                         enable_prefix_caching=not no_prefix_caching, **options)
    engine.add_request("run", prompt, params)
    summary = engine.load_summary
    click.echo(f"loaded {bundle} on {engine.device_name} in {time.perf_counter() - start:.2f} s: "
               f"{summary.get('weights_bytes', 0) / 1e6:.1f} MB of weights, KV cache for {summary.get('kv_tokens', 0)} tokens",
               err=True)
    click.echo(prompt, nl=False)
    finish_reason = None
    while engine.has_unfinished():
        for output in engine.step():
            click.echo(output.new_text, nl=False)
            finish_reason = output.finish_reason or finish_reason
    click.echo()
    click.echo(f"[{finish_reason}]", err=True)  # why it ended: stop (EOS, stop string) or length (--max-tokens, context)
    engine.close()
