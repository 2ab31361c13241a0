"""Ingest: a Hugging Face model directory -> (ModelSpec, IR parameters, tokenizer files).

Every check happens here, before any work: a bad checkpoint fails with one line naming the file
and the field. Nothing from the checkpoint is executed (no trust_remote_code, no pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from llmc.errors import UserError

from .architectures import CONFIG_FIELDS, FAMILIES, GLOBAL_WEIGHTS, LAYER_WEIGHTS, OPTIONAL_CONFIG_FIELDS, OPTIONAL_LAYER_WEIGHTS
from .spec import ModelSpec

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


def _rope(config: dict) -> tuple[float, dict]:
    params = config.get("rope_parameters")
    if isinstance(params, dict):  # transformers 5 spelling
        theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
        return float(theta), {k: v for k, v in params.items() if k != "rope_theta"}
    scaling = config.get("rope_scaling") or {}
    if not isinstance(scaling, dict):
        raise UserError("config.json: field 'rope_scaling' must be an object or null")
    return float(_field(config, ("rope_theta",), float, "rope base", 10000.0, required=False)), dict(scaling)


def _sliding_windows(config: dict, arch: str, num_layers: int) -> tuple[int, ...]:
    style = FAMILIES[arch].sliding_window
    window = config.get("sliding_window")
    if style == "all":
        return (int(window or 0),) * num_layers
    if style == "layer_types":
        if not config.get("use_sliding_window") or not window:
            return (0,) * num_layers
        types = config.get("layer_types")
        if not isinstance(types, list) or len(types) != num_layers:
            first = int(config.get("max_window_layers", num_layers))
            types = ["sliding_attention" if i >= first else "full_attention" for i in range(num_layers)]
        return tuple(int(window) if t == "sliding_attention" else 0 for t in types)
    return (0,) * num_layers


def _token_ids(value) -> tuple[int, ...]:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else (int(value),)


def read_spec(model_dir: Path) -> ModelSpec:
    config = read_json(model_dir / "config.json")
    arch = architecture_of(config)
    dims = {k: _field(config, names, int, k) for k, names in CONFIG_FIELDS.items()}
    q_heads = dims["num_q_heads"]
    kv_heads = _field(config, OPTIONAL_CONFIG_FIELDS["num_kv_heads"], int, "", q_heads, required=False)
    head_dim = _field(config, OPTIONAL_CONFIG_FIELDS["head_dim"], int, "", dims["hidden_size"] // q_heads, required=False)
    if kv_heads < 1 or q_heads % kv_heads:
        raise UserError(f"config.json: num_attention_heads {q_heads} is not a multiple of num_key_value_heads {kv_heads}")
    theta, scaling = _rope(config)
    generation = read_json(model_dir / "generation_config.json", required=False) or {}
    eos = _token_ids(generation.get("eos_token_id", config.get("eos_token_id")))
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
        sliding_windows=_sliding_windows(config, arch, dims["num_layers"]),
        qk_norm=FAMILIES[arch].qk_norm,
        bos_token_id=generation.get("bos_token_id", config.get("bos_token_id")),
        eos_token_ids=eos,
        checkpoint_dtype=dtype if dtype in DTYPES else "float32",
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


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    h, i, hd = spec.hidden_size, spec.intermediate_size, spec.head_dim
    per_layer = {
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "q_proj.weight": (spec.q_size, h), "k_proj.weight": (spec.kv_size, h), "v_proj.weight": (spec.kv_size, h),
        "o_proj.weight": (h, spec.q_size), "gate_proj.weight": (i, h), "up_proj.weight": (i, h),
        "down_proj.weight": (h, i), "q_proj.bias": (spec.q_size,), "k_proj.bias": (spec.kv_size,),
        "v_proj.bias": (spec.kv_size,), "o_proj.bias": (h,), "gate_proj.bias": (i,), "up_proj.bias": (i,),
        "down_proj.bias": (h,), "q_norm.weight": (hd,), "k_norm.weight": (hd,),
    }
    shapes = {"embed_tokens.weight": (spec.vocab_size, h), "norm.weight": (h,), "lm_head.weight": (spec.vocab_size, h)}
    for layer in range(spec.num_layers):
        shapes.update({f"layers.{layer}.{k}": v for k, v in per_layer.items()})
    return shapes


def _name_map(spec: ModelSpec) -> tuple[dict[str, str], set[str]]:
    names = dict(GLOBAL_WEIGHTS)
    optional = {"lm_head.weight"} if spec.tie_word_embeddings else set()
    for layer in range(spec.num_layers):
        for table, is_optional in ((LAYER_WEIGHTS, False), (OPTIONAL_LAYER_WEIGHTS, True)):
            for hf, ir in table.items():
                names[hf.format(layer)] = ir.format(layer)
                if is_optional:
                    optional.add(ir.format(layer))
    return names, optional


def read_weights(model_dir: Path, spec: ModelSpec, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from llmc.artifacts.safetensors_check import check_safetensors

    names, optional = _name_map(spec)
    expected = _expected_shapes(spec)
    params: dict[str, torch.Tensor] = {}
    for path in weight_files(model_dir):
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as f:
            for hf_name in f.keys():
                ir = names.get(hf_name)
                if ir is None:
                    continue
                tensor = f.get_tensor(hf_name)
                if tuple(tensor.shape) != expected[ir]:
                    raise UserError(
                        f"{path.name}: tensor {hf_name!r} has shape {list(tensor.shape)} but config.json implies "
                        f"{list(expected[ir])}; the weights do not belong to this config"
                    )
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise UserError(f"{path.name}: tensor {hf_name!r} holds NaN or infinite values")
                params[ir] = tensor.to(dtype)
    missing = sorted(hf for hf, ir in names.items() if ir not in params and ir not in optional)
    if missing:
        raise UserError(f"{model_dir.name}: weight {missing[0]!r} is missing from the safetensors files ({len(missing)} missing)")
    if spec.qk_norm and "layers.0.q_norm.weight" not in params:
        raise UserError(f"{model_dir.name}: {spec.architecture} needs q_norm/k_norm weights and they are missing")
    return params


def tokenizer_files(model_dir: Path) -> dict[str, Path]:
    files = {name: model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()}
    for name in ("tokenizer_config.json", "generation_config.json"):
        if name in files:
            read_json(files[name])
    return files
