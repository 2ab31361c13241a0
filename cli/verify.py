"""`llmc verify BUNDLE`: check a bundle's files against its manifest, say where it loads."""

from __future__ import annotations

from pathlib import Path

import click

from llmc.artifacts import FORMAT_VERSION, Bundle
from llmc.errors import UserError


@click.command("verify")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--fast", is_flag=True, help="Check the manifest, file list and sizes only (no sha256).")
@click.option("--run", "run_selftest", is_flag=True, help="Also run the bundle's self-test on --device.")
@click.option("--device", default=None, help="Device for --run: cpu or cuda (default: the bundle's backend).")
@click.option("--signature", type=click.Path(path_type=Path), default=None,
              help="Also check this signature (made by llmc sign) over the bundle.")
@click.option("--key", "public_key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --signature: the signer's PEM public key.")
@click.option("--identity", default=None, help="With --signature, keyless: the signer's identity (e.g. an email).")
@click.option("--oidc-issuer", default=None, help="With --signature, keyless: the identity's OIDC issuer.")
def verify(bundle: Path, fast: bool, run_selftest: bool, device: str | None, signature: Path | None,
           public_key: Path | None, identity: str | None, oidc_issuer: str | None) -> None:
    """Check BUNDLE (a directory or a packed archive): digests, format version, target, plans.

    Lists every mismatch and exits 1 if there is any; a bundle whose files match but that the
    runtime could not run, or a signature that does not verify, is one line and exit 2.
    """
    if signature is not None and fast:
        raise UserError("--signature checks every byte: drop --fast")
    with Bundle.open(bundle, verify="none") as opened:
        report = opened.check(full=not fast)
        if not report.ok:
            click.echo(f"{bundle}: {len(report.mismatches)} mismatch(es)")
            for mismatch in report.mismatches:
                click.echo(f"  {mismatch.message}")
            raise click.exceptions.Exit(1)
        opened.validate()
        if signature is not None:
            from llmc.artifacts.signing import check_signature

            check_signature(opened, signature, public_key=public_key, identity=identity, oidc_issuer=oidc_issuer)
        manifest = report.manifest
        click.echo(f"OK: {report.root_digest}")
        if signature is not None:
            click.echo(f"signature: {signature} verifies")
        click.echo(f"files: {len(manifest['files'])} checked ({'sizes' if fast else 'sha256 and sizes'})")
        click.echo(f"format: {report.format_version} (this llmc reads formats up to {FORMAT_VERSION}), "
                   f"built by llmc {manifest['llmc_version']}")
        click.echo(f"model: {manifest['model']['architecture']}, {manifest['model']['dtype']}")
        click.echo(f"loads on: {describe_target(report.target)}")
        if run_selftest:
            _run_selftest(opened, device or report.target["backend"])


def _run_selftest(opened: Bundle, device: str) -> None:
    from llmc.runtime.engine import Engine, open_backend
    from llmc.runtime.selftest import run_selftest

    engine = Engine(opened, open_backend(opened, device))
    try:
        result = run_selftest(engine, opened.read_json("selftest.json"))
    finally:
        engine.close()
    click.echo(f"{result.describe()} (device {device})")
    if not result.passed:
        raise click.exceptions.Exit(1)


def describe_target(target: dict) -> str:
    """Which runtime and devices can load a bundle built for `target` (the manifest's section)."""
    name, backend, arch = target["name"], target["backend"], target["arch"]
    if backend == "cuda":
        cc = f" (compute capability {arch // 10}.{arch % 10})" if isinstance(arch, int) else ""
        return f"{name}: the cuda runtime on NVIDIA GPUs of that architecture{cc}"
    if backend == "hip":
        return f"{name}: the hip runtime on AMD GPUs of architecture {arch}"
    if backend == "cpu":
        return f"{name}: the cpu reference runtime on any machine (needs the llmc[build] extra)"
    return f"{name}: a {backend} runtime"
