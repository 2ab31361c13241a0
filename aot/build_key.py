"""The build key: sha256 of the input files (hashed while ingest checks them), the options, the target
and the toolchain. Same key, same bundle bytes; the bundle cache is keyed by it."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import torch

import llmc

from .config import BuildConfig
from .target import Target


@functools.lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over llmc's own Python source: a changed compiler is a different toolchain, version string or not."""
    h = hashlib.sha256()
    for package in ("llmc", "llmc.aot", "llmc.kernels", "llmc.artifacts", "llmc.runtime", "llmc.cli"):
        root = Path(importlib.util.find_spec(package).origin).parent  # found, not imported: a hit imports no kernels
        for path in sorted(root.rglob("*.py")):
            if package == "llmc" and path.parent != root:
                continue  # subpackages are their own roots (the installed layout maps them elsewhere)
            h.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def toolchain_versions(target: Target) -> dict[str, str]:
    import triton

    versions = {"llmc": llmc.__version__, "torch": torch.__version__.split("+")[0], "triton": triton.__version__}
    if target.backend == "cuda":
        from .compile import toolchain

        versions["ptxas"] = toolchain(target.name).ptxas
    return versions


def build_key(input_digest, config: BuildConfig, target: Target, toolchain: dict[str, str]) -> str:
    h = input_digest.copy()
    options = sorted(config.manifest_fields(config.dtype or "", config.max_seq_len).items())
    h.update(repr((options, target.name, sorted(toolchain.items()), source_digest())).encode())
    if config.selftest_prompt != BuildConfig.selftest_prompt:  # not in the manifest's options; keys of default builds unchanged
        h.update(b"selftest_prompt\0" + config.selftest_prompt.encode())
    return h.hexdigest()
