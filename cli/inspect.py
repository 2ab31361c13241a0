"""`llmc inspect BUNDLE`: what is inside, and which impl serves every node."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import click


@click.command("inspect")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the manifest and the lock as JSON.")
def inspect(bundle, as_json):
    """Show BUNDLE's model, target, buckets and the impl chosen for each node."""
    from llmc.artifacts import Bundle

    with Bundle.open(bundle, verify="fast") as b:
        manifest, lock = b.manifest, b.lock()
        if as_json:
            click.echo(json.dumps({"manifest": manifest, "impls": lock}, indent=2, sort_keys=True))
            return
        m, build, target = manifest["model"], manifest["build"], manifest["target"]
        click.echo(f"bundle   {bundle} (format {manifest['format_version']}, llmc {manifest['llmc_version']})")
        click.echo(f"model    {m['architecture']}, {m['dtype']}, {m['num_layers']} layers, hidden {m['hidden_size']}, "
                   f"heads {m['num_q_heads']}/{m['num_kv_heads']} x {m['head_dim']}, vocab {m['vocab_size']}")
        click.echo(f"target   {target['name']} ({target['backend']})")
        click.echo(f"buckets  decode {build['decode_buckets']}, prefill {build['prefill_buckets']} tokens; "
                   f"context {build['max_seq_len']}, KV block {build['kv_block_size']}")
        click.echo(f"root     {manifest['root_digest']}")
        click.echo("impls    (plan/node: op -> provider; rejected)")
        nodes = lock["nodes"]
        for key in sorted(nodes):
            entry = nodes[key]
            rejected = "; ".join(f"{p}: {r}" for p, r in entry["rejected"].items())
            click.echo(f"  {key}: {entry['op']} -> {entry['provider']}" + (f"  [{rejected}]" if rejected else ""))
        counts = Counter((e["op"], e["provider"]) for e in nodes.values())
        click.echo("summary  " + ", ".join(f"{op}:{p} x{n}" for (op, p), n in sorted(counts.items())))
