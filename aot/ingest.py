"""Ingest: a Hugging Face model directory -> (ModelSpec, IR parameters, tokenizer files).

Every check happens here, before any work: a bad checkpoint fails with one line naming the file
and the field. Nothing from the checkpoint is executed (no trust_remote_code, no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from llmc.errors import UserError

from . import checkpoint, fp8_weights, weights
from llmc.artifacts.validate import LIMITS as MODEL_LIMITS
from llmc.runtime.tokenizer import check_tokenizer_json

from .architectures import CONFIG_FIELDS, OPTIONAL_CONFIG_FIELDS
from .families import FAMILIES
from .families import config as family_config
from .families.weights import IGNORED_SUFFIXES, weight_map
from .checkpoint import Checkpoint
from .quantize import checkpoint_scheme
from .rope import inverse_frequencies
from .spec import ModelSpec
from .weights import Weight

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_json(path: Path, required: bool = True) -> dict | None:
    if not path.is_file():
        if required:
            raise UserError(f"{path.name}: not found in {path.parent}; a Hugging Face model directory needs it")
        return None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path.name}: invalid JSON ({e}); fix or re-download the file") from None
    if not isinstance(value, dict):
        raise UserError(f"{path.name}: must hold a JSON object")
    return value


def _field(config: dict, names: tuple[str, ...], kind: type, what: str, default=None, required=True):
    for name in names:
        if config.get(name) is not None:
            value = config[name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise UserError(f"config.json: field {name!r} must be {kind.__name__}, got {value!r}")
            return value
    if required:
        raise UserError(f"config.json: missing required field {names[0]!r} (the model's {what})")
    return default


def _bounded(value: int, name: str, key: str) -> int:
    """A model dimension from config.json: positive, and at most what a bundle may declare."""
    limit = MODEL_LIMITS[f"model.{key}"]
    if not 1 <= value <= limit:
        raise UserError(f"config.json: field {name!r} must be in 1..{limit}, got {value}")
    return value


def architecture_of(config: dict) -> str:
    archs = config.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise UserError("config.json: field 'architectures' must be a list naming the model class, e.g. [\"LlamaForCausalLM\"]")
    arch = archs[0]
    if arch not in FAMILIES:
        if "auto_map" in config:
            raise UserError(
                f"config.json: architecture {arch!r} is defined by code in the checkpoint (auto_map), which would need "
                f"trust_remote_code; llmc never runs checkpoint code. Supported: {', '.join(FAMILIES)}"
            )
        raise UserError(f"config.json: architecture {arch!r} is not supported; supported: {', '.join(FAMILIES)}")
    return arch


def _token_ids(value, name: str, vocab_size: int) -> tuple[int, ...]:
    """eos/bos token ids of config.json or generation_config.json: ints in the vocabulary."""
    if value is None:
        return ()
    ids = tuple(value) if isinstance(value, list) else (value,)
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < vocab_size:
            raise UserError(f"config.json / generation_config.json: field {name!r} must hold token ids in "
                            f"0..{vocab_size - 1}, got {token!r}")
    return ids


def read_spec(model_dir: Path) -> ModelSpec:
    config = read_json(model_dir / "config.json")
    arch = architecture_of(config)
    dims = {k: _bounded(_field(config, names, int, k), names[0], k) for k, names in CONFIG_FIELDS.items()}
    q_heads = dims["num_q_heads"]
    kv_heads = _field(config, OPTIONAL_CONFIG_FIELDS["num_kv_heads"], int, "", q_heads, required=False)
    head_dim = _field(config, OPTIONAL_CONFIG_FIELDS["head_dim"], int, "", dims["hidden_size"] // q_heads, required=False)
    _bounded(kv_heads, "num_key_value_heads", "num_kv_heads")
    _bounded(head_dim, "head_dim", "head_dim")
    if _bounded(_field(config, ("max_position_embeddings",), int, "", 4096, required=False), "max_position_embeddings",
                "max_position_embeddings") < 2:
        raise UserError("config.json: field 'max_position_embeddings' must be at least 2")
    eps = _field(config, ("rms_norm_eps",), float, "", 1e-6, required=False)
    if not 0 < eps < 1:
        raise UserError(f"config.json: field 'rms_norm_eps' must be in (0, 1), got {eps!r}")
    if q_heads % kv_heads:
        raise UserError(f"config.json: num_attention_heads {q_heads} is not a multiple of num_key_value_heads {kv_heads}")
    family = FAMILIES[arch]
    try:
        theta, scaling, local_rope = family_config.rope(config, family)
        bases = [float(theta), float(local_rope.get("rope_theta", theta))]
    except (TypeError, ValueError, AttributeError) as e:
        raise UserError(f"config.json: the rope parameters (rope_theta, rope_scaling, rope_parameters) are invalid: {e}") from None
    if not all(0 < base < float("inf") for base in bases):
        raise UserError(f"config.json: field 'rope_theta' must be a positive finite number, got {bases[0]!r}"
                        + (f" (sliding layers: {bases[1]!r})" if bases[1] != bases[0] else ""))
    rotary_dim = family_config.rotary_dim(config, family, head_dim, scaling)
    for base, rope_scaling in ((bases[0], scaling), (bases[1], local_rope)):
        try:
            inverse_frequencies(rotary_dim or head_dim, base, rope_scaling)  # an unsupported scaling fails here, before any work
        except (TypeError, ValueError, KeyError, ZeroDivisionError, OverflowError) as e:
            raise UserError(f"config.json: field 'rope_scaling' is invalid ({type(e).__name__}: {e})") from None
    check_tokenizer_json(model_dir / "tokenizer.json")
    generation = read_json(model_dir / "generation_config.json", required=False) or {}
    eos = _token_ids(generation.get("eos_token_id", config.get("eos_token_id")), "eos_token_id", dims["vocab_size"])
    bos = _token_ids(generation.get("bos_token_id", config.get("bos_token_id")), "bos_token_id", dims["vocab_size"])
    if len(bos) > 1:
        raise UserError(f"config.json / generation_config.json: field 'bos_token_id' must be one token id, got {list(bos)}")
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return ModelSpec(
        architecture=arch,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        rms_norm_eps=_field(config, ("rms_norm_eps",), float, "", 1e-6, required=False),
        max_position_embeddings=_field(config, ("max_position_embeddings",), int, "", 4096, required=False),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        sliding_windows=family_config.sliding_windows(config, family, dims["num_layers"]),
        qk_norm=family.qk_norm,
        bos_token_id=bos[0] if bos else None,
        eos_token_ids=eos,
        checkpoint_dtype=dtype if dtype in DTYPES else "float32",
        local_rope=local_rope,
        rotary_dim=rotary_dim,
        activation=family_config.activation(config, family),
        **family_config.moe(config, family, dims["num_layers"]),
        **family_config.gemma(config, family, dims["hidden_size"]),
        **dims,
    )


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = (read_json(index) or {}).get("weight_map")
        if not isinstance(weight_map, dict):
            raise UserError("model.safetensors.index.json: field 'weight_map' must map tensor names to shard files")
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            if not isinstance(shard, str) or "/" in shard or not (model_dir / shard).is_file():
                raise UserError(f"model.safetensors.index.json: shard {shard!r} is missing from {model_dir}")
        return [model_dir / s for s in shards]
    single = model_dir / "model.safetensors"
    if single.is_file():
        return [single]
    if any(model_dir.glob("*.bin")) or any(model_dir.glob("*.pt")):
        raise UserError(f"{model_dir}: only pickle weights (*.bin/*.pt) found; llmc reads safetensors only: convert them first")
    raise UserError(f"{model_dir}: no model.safetensors or model.safetensors.index.json found")


def read_weights(model_dir: Path, spec: ModelSpec, dtype: torch.dtype, checkpoint: Checkpoint | None = None) -> dict[str, Weight]:
    """Every IR parameter as a `Weight` (nothing loaded yet); `checkpoint` is the scan, when the caller has one."""
    checkpoint = checkpoint or scan_checkpoint(model_dir)
    present = checkpoint.tensors
    scheme = checkpoint_scheme(read_json(model_dir / "config.json"))
    scales = fp8_weights.scale_sources(present, scheme)  # FP8 weight -> its scale tensor
    scale_names = {s.name for s in scales.values()}
    sources = weight_map(FAMILIES[spec.architecture], spec, set(present) - scale_names)
    expected = {hf: (source, shape) for source in sources for hf, shape in zip(source.hf, source.shapes)}
    for hf, tensor in sorted(present.items()):
        if hf not in expected and not hf.endswith(IGNORED_SUFFIXES) and hf not in scale_names:
            raise UserError(f"{tensor.path.name}: tensor {hf!r} is not part of {spec.architecture} as config.json describes it "
                            f"({_unused_hint(hf, spec)})")
        if hf in expected and tensor.shape != expected[hf][1]:
            raise UserError(
                f"{tensor.path.name}: tensor {hf!r} has shape {list(tensor.shape)} but config.json implies "
                f"{list(expected[hf][1])}; the weights do not belong to this config"
            )
    params: dict[str, Weight] = {}
    for source in sources:
        missing = [hf for hf in source.hf if hf not in present]
        if missing and source.optional:
            continue
        if missing:
            count = sum(hf not in present for s in sources if not s.optional for hf in s.hf)
            raise UserError(f"{model_dir.name}: weight {missing[0]!r} is missing from the safetensors files ({count} missing)")
        if source.hf[0] in scales and source.transform == "copy":
            params.update(fp8_weights.checkpoint_params(source.ir, present[source.hf[0]], scales[source.hf[0]], scheme, dtype))
            continue
        if any(hf in scales for hf in source.hf):
            raise UserError(f"{present[source.hf[0]].path.name}: FP8 tensor {source.hf[0]!r} feeds {source.ir!r} through "
                            f"{source.transform!r}, which llmc does not do for FP8 (experts, 1 + w norms)")
        params[source.ir] = weights.transformed(source.transform, [present[hf] for hf in source.hf], dtype)
    return params


def scan_checkpoint(model_dir: Path) -> Checkpoint:
    """Check the checkpoint's tensors (headers, NaN/Inf, one shard each, quantization) and hash its files, once."""
    checkpoint_scheme(read_json(model_dir / "config.json"))  # a quantization llmc cannot read fails before the scan
    return checkpoint.scan(model_dir, weight_files(model_dir))


def _unused_hint(hf: str, spec: ModelSpec) -> str:
    if ".experts." in hf and spec.num_experts:
        return f"num_experts is {spec.num_experts}"
    if ".experts." in hf or ".gate." in hf:
        return "the config has no experts"
    return "no weight map entry names it"


def tokenizer_files(model_dir: Path) -> dict[str, Path]:
    files = {name: model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()}
    for name in ("tokenizer_config.json", "generation_config.json"):
        if name in files:
            read_json(files[name])
    return files
