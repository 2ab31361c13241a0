"""FP8 quantization schemes: what a checkpoint's `quantization_config` declares, or `--quantize fp8` asks.

A scheme is e4m3 weights at one granularity (square blocks, or per output channel, or one
scale per tensor) and activations quantized dynamically (per 1 x block group for block-wise
weights, per token otherwise). It lands in the manifest as `Scheme.to_json()`. How the
tensors are read or made is `aot/fp8_weights.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmc.errors import UserError

QUANTIZE_CHOICES = ("fp8",)
SUPPORTED = ("fp8 (block-wise e4m3, dynamic activations)",
             "compressed-tensors float-quantized (fp8 weights per channel or tensor, dynamic per-token activations)")
GRANULARITY = re.compile(r"block(\d+)|channel|tensor")


@dataclass(frozen=True)
class Scheme:
    granularity: str  # "block<B>" (square B x B blocks), "channel" or "tensor"
    scale_suffix: str = "weight_scale"  # the checkpoint's name for a weight's scale tensor

    def __post_init__(self):
        match = GRANULARITY.fullmatch(self.granularity)
        if not match or (match.group(1) is not None and int(match.group(1)) < 1):
            raise ValueError(f"granularity {self.granularity!r}")

    @property
    def group_size(self) -> int:
        """The fp8 ops' group_size: the block size, or 0 (per-token activations, one scale per row)."""
        return int(self.granularity[5:]) if self.granularity.startswith("block") else 0

    @property
    def activations(self) -> str:
        return "dynamic_per_group" if self.group_size else "dynamic_per_token"

    def to_json(self) -> dict:
        return {"weights": "fp8_e4m3", "granularity": self.granularity, "activations": self.activations}


AT_BUILD = Scheme("channel")  # --quantize fp8


def _refuse(method, why: str) -> UserError:
    return UserError(f"config.json: quantization_config quant_method {method!r} {why}; llmc reads "
                     f"{' and '.join(SUPPORTED)}: build from the 16-bit checkpoint instead")


def checkpoint_scheme(config: dict) -> Scheme | None:
    """The scheme config.json's quantization_config declares, None for none; anything else is refused."""
    quant = config.get("quantization_config")
    if quant is None:
        return None
    method = quant.get("quant_method") if isinstance(quant, dict) else None
    if method == "fp8":
        return _block_fp8(quant)
    if method == "compressed-tensors":
        return _compressed_tensors(quant)
    raise _refuse(method, "is not supported")


def _block_fp8(quant: dict) -> Scheme:
    if quant.get("fmt", "e4m3") != "e4m3":
        raise _refuse("fp8", f"with fmt {quant.get('fmt')!r} is not supported (only e4m3)")
    if quant.get("activation_scheme", "dynamic") != "dynamic":
        raise _refuse("fp8", f"with activation_scheme {quant.get('activation_scheme')!r} (static activation scales) "
                             "is not supported")
    if quant.get("kv_cache_scheme") is not None:
        raise _refuse("fp8", "with kv_cache_scheme (an FP8 KV cache) is not supported")
    block = quant.get("weight_block_size")
    if block is None:
        raise _refuse("fp8", "without weight_block_size (per-tensor scales) is not supported")
    if (not isinstance(block, list) or len(block) != 2 or not all(isinstance(b, int) and b > 0 for b in block)
            or block[0] != block[1]):
        raise UserError(f"config.json: quantization_config.weight_block_size must be two equal positive integers "
                        f"such as [128, 128], got {block!r}")
    return Scheme(f"block{block[0]}", "weight_scale_inv")


def _compressed_tensors(quant: dict) -> Scheme:
    method = "compressed-tensors"
    if quant.get("format") not in ("float-quantized", None):
        raise _refuse(method, f"with format {quant.get('format')!r} is not supported")
    if quant.get("kv_cache_scheme") is not None:
        raise _refuse(method, "with kv_cache_scheme (an FP8 KV cache) is not supported")
    groups = quant.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise UserError("config.json: quantization_config.config_groups must be an object of quantization groups")
    strategies = set()
    for name, group in groups.items():
        w = (group or {}).get("weights") or {}
        a = (group or {}).get("input_activations")
        if w.get("num_bits") != 8 or w.get("type") != "float" or w.get("strategy") not in ("channel", "tensor"):
            raise _refuse(method, f"with config_groups.{name}.weights {_brief(w)} is not supported (needs num_bits 8, "
                                  "type float, strategy channel or tensor)")
        if w.get("dynamic") or not isinstance(a, dict) or a.get("num_bits") != 8 or a.get("type") != "float" \
                or a.get("dynamic") is not True or a.get("strategy") != "token":
            raise _refuse(method, f"with config_groups.{name}.input_activations {_brief(a)} is not supported (needs "
                                  "num_bits 8, type float, dynamic true, strategy token; static scales are not read)")
        strategies.add(w["strategy"])
    if len(strategies) > 1:
        raise _refuse(method, "with both channel and tensor weight strategies is not supported")
    return Scheme(strategies.pop())


def _brief(d) -> str:
    if not isinstance(d, dict):
        return repr(d)
    return "{" + ", ".join(f"{k}: {d.get(k)!r}" for k in ("num_bits", "type", "strategy", "dynamic") if k in d) + "}"


def check_target(target) -> None:
    """FP8 linears need FP8 tensor cores or a weight-only kernel on GPU targets; the cpu runs the ops' natives."""
    if target.compiles_kernels and not ({"fp8", "mma", "mfma"} & target.capabilities):
        raise UserError(f"--quantize fp8: target {target.name} has neither FP8 tensor cores nor a weight-only FP8 "
                        "path; build without --quantize or for sm80, sm89, sm90, gfx942 or cpu")


def build_scheme(model_dir, quantize: str | None, target) -> Scheme | None:
    """The bundle's scheme: the checkpoint's, or `--quantize fp8`'s for a 16-bit one; checked against the target."""
    from .ingest import read_json

    scheme = checkpoint_scheme(read_json(model_dir / "config.json"))
    if scheme is not None and quantize:
        raise UserError(f"--quantize {quantize}: config.json says the checkpoint is already quantized "
                        f"({scheme.granularity} FP8); build it without --quantize")
    scheme = scheme or (AT_BUILD if quantize else None)
    if scheme is not None:
        check_target(target)
    return scheme
