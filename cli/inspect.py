"""`llmc inspect BUNDLE`: what is inside, and which impl serves every node."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--nodes", is_flag=True, help="Also list every plan node with its impl and the rejected alternatives.")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the lock as JSON.")
def inspect(bundle, nodes, as_json):
    """Show BUNDLE's model, target, buckets, kernels and which impls serve its ops."""
    from llmc.artifacts import Bundle

    with Bundle.open(bundle, verify="fast") as b:
        manifest, lock = b.manifest, b.lock()
    if as_json:
        click.echo(json.dumps({"manifest": manifest, "impls": lock}, indent=2, sort_keys=True))
        return
    for line in summary(bundle, manifest, lock["nodes"]):
        click.echo(line)
    if nodes:
        click.echo("nodes    (plan/node: op -> provider; rejected)")
        for key, entry in sorted(lock["nodes"].items()):
            rejected = "; ".join(f"{p}: {r}" for p, r in entry["rejected"].items())
            click.echo(f"  {key}: {entry['op']} -> {entry['provider']}" + (f"  [{rejected}]" if rejected else ""))


def summary(bundle, manifest: dict, nodes: dict) -> list[str]:
    m, build, target = manifest["model"], manifest["build"], manifest["target"]
    kernels = sum(1 for name in manifest["files"] if name.startswith("kernels/") and name != "kernels/index.json")
    lines = [
        f"bundle   {bundle} (format {manifest['format_version']}, llmc {manifest['llmc_version']})",
        f"model    {m['architecture']}, {m['dtype']}, {m['num_layers']} layers, hidden {m['hidden_size']}, "
        f"heads {m['num_q_heads']}/{m['num_kv_heads']} x {m['head_dim']}, vocab {m['vocab_size']}",
        f"target   {target['name']} ({target['backend']})",
        *_quantization(manifest),
        f"buckets  decode {build['decode_buckets']}, prefill {build['prefill_buckets']} tokens; "
        f"context {build['max_seq_len']}, KV block {build['kv_block_size']}",
        f"kernels  {kernels} compiled kernels" if kernels else "kernels  none (runs the ops' native functions)",
        f"root     {manifest['root_digest']}",
        "impls    op: provider x nodes (all plans; --nodes lists each)",
    ]
    counts = Counter((e["op"], e["provider"]) for e in nodes.values())
    for op in sorted({op for op, _ in counts}):
        providers = ", ".join(f"{p} x{n}" for (o, p), n in sorted(counts.items()) if o == op)
        lines.append(f"  {op}: {providers}")
    return lines


def _quantization(manifest: dict) -> list[str]:
    q = manifest.get("quantization")
    if not q:
        return []
    return [f"quant    {q['weights']} weights ({q['granularity']} scales), activations {q['activations']}; "
            "embedding, norms and LM head 16-bit"]
