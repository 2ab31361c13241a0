"""`llmc pack BUNDLE -o OUT`: one deterministic archive file for shipping a bundle."""

from __future__ import annotations

from pathlib import Path

import click

from llmc.artifacts import pack as pack_bundle


@click.command("pack")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="The archive to write, e.g. model.llmc.tar.")
def pack(bundle: Path, out: Path) -> None:
    """Verify BUNDLE and write it as one archive that llmc run, llmc verify and Engine.load accept.

    The same bundle always gives the same bytes (sorted names, fixed times and owners).
    """
    path = pack_bundle(bundle, out)
    click.echo(f"wrote {path} ({path.stat().st_size} bytes)")
