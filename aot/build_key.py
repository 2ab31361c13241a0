"""The build key: sha256 of the input files (hashed while ingest checks them), the options, the target
and the toolchain. Same key, same bundle bytes; the bundle cache is keyed by it."""

from __future__ import annotations

import torch

import llmc

from .config import BuildConfig
from .target import Target


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
    h.update(repr((options, target.name, sorted(toolchain.items()))).encode())
    if config.selftest_prompt != BuildConfig.selftest_prompt:  # not in the manifest's options; keys of default builds unchanged
        h.update(b"selftest_prompt\0" + config.selftest_prompt.encode())
    return h.hexdigest()
