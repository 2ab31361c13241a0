"""`llmc cache info` and `llmc cache clear`: kernels and bundles under $LLMC_CACHE_DIR (default ~/.cache/llmc)."""

from __future__ import annotations

import click

from llmc.artifacts.bundle_cache import BundleCache
from llmc.artifacts.kernel_cache import KernelCache


@click.group("cache")
def cache():
    """The compiled-kernel and finished-bundle caches shared by builds."""


@cache.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info(as_json: bool):
    """Where the caches are, how many entries they hold and their size."""
    kernels, bundles = KernelCache().info(), BundleCache().info()
    if as_json:
        import json

        click.echo(json.dumps({**kernels, "bundles": bundles}, sort_keys=True))
        return
    click.echo(f"path:    {kernels['path']}")
    click.echo(f"kernels: {kernels['entries']} ({_human(kernels['bytes'])})")
    click.echo(f"bundles: {bundles['entries']} ({_human(bundles['bytes'])})")


@cache.command("clear")
def clear():
    """Delete every cached kernel and bundle (files llmc did not write there stay)."""
    kernels, bundles = KernelCache(), BundleCache()
    removed_kernels, removed_bundles = kernels.clear(), bundles.clear()
    click.echo(f"removed {removed_kernels} kernel{'s' if removed_kernels != 1 else ''} and "
               f"{removed_bundles} bundle{'s' if removed_bundles != 1 else ''} from {kernels.root}")


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
