"""`llmc cache info` and `llmc cache clear`: the kernel cache at $LLMC_CACHE_DIR (default ~/.cache/llmc)."""

from __future__ import annotations

import click

from llmc.artifacts.kernel_cache import KernelCache


@click.group("cache")
def cache():
    """The compiled-kernel cache shared by builds."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(as_json: bool):
    """Where the cache is, how many kernels it holds and their size."""
    stats = KernelCache().info()
    if as_json:
        import json

        click.echo(json.dumps(stats, sort_keys=True))
        return
    click.echo(f"path:    {stats['path']}")
    click.echo(f"kernels: {stats['entries']}")
    click.echo(f"size:    {_human(stats['bytes'])}")


@cache.command("clear")
def clear():
    """Delete every cached kernel (the next build compiles them again)."""
    store = KernelCache()
    removed = store.clear()
    click.echo(f"removed {removed} kernel{'s' if removed != 1 else ''} from {store.root}")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
