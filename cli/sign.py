"""`llmc sign BUNDLE`: an OpenSSF model-signing signature over a verified bundle."""

from __future__ import annotations

from pathlib import Path

import click

from llmc.artifacts.signing import default_signature_path, sign_bundle


@click.command("sign")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--key", "private_key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A PEM elliptic-curve private key (offline signing); without it, keyless Sigstore signing.")
@click.option("--password", default=None, help="The private key's password, if it is encrypted.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="The signature file to write (default: BUNDLE.sig beside the bundle); never replaced.")
def sign(bundle: Path, private_key: Path | None, password: str | None, out: Path | None) -> None:
    """Verify BUNDLE in full and sign it (a Sigstore bundle; check it with llmc verify --signature)."""
    out = out or default_signature_path(bundle)
    root = sign_bundle(bundle, out, private_key=private_key, password=password)
    click.echo(f"signed {bundle} (root {root}) -> {out}")
