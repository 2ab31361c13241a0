"""FP8 checkpoints in the Hub's two layouts, made from a random-weight 16-bit one (tests/checkpoints.py).

The quantization is the test's own, written from the layouts' definitions rather than llmc's
code: e4m3 values with saturation at 448 and float32 scales, `w = q * scale`.
- "block": Qwen3/DeepSeek "-FP8": `quant_method: fp8`, `*.weight_scale_inv` [ceil(N/B), ceil(K/B)];
- "channel" / "tensor": compressed-tensors float-quantized (RedHatAI), `*.weight_scale` [N, 1] / [1].
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import safetensors.torch
import torch

from checkpoints import make_checkpoint

FP8, FP8_MAX = torch.float8_e4m3fn, 448.0
LINEAR = re.compile(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight")


def e4m3(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.float().abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp_min(1e-12)
    return e4m3(w, scale), scale


def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (w.float().abs().amax() / FP8_MAX).reshape(1)
    return e4m3(w, scale), scale


def quantize_blocks(w: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    n, k = w.shape
    scale = torch.empty((-(-n // block), -(-k // block)))
    q = torch.empty(w.shape, dtype=FP8)
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            tile = w[i * block:(i + 1) * block, j * block:(j + 1) * block].float()
            scale[i, j] = tile.abs().max() / FP8_MAX
            q[i * block:(i + 1) * block, j * block:(j + 1) * block] = e4m3(tile, scale[i, j])
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor, block: int | None = None) -> torch.Tensor:
    if block:
        scale = scale.repeat_interleave(block, 0)[:q.shape[0]].repeat_interleave(block, 1)[:, :q.shape[1]]
    return q.float() * scale.float()


def quantization_config(layout: str, block: int = 128) -> dict:
    if layout == "block":
        return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [block, block]}
    return {
        "quant_method": "compressed-tensors", "format": "float-quantized", "ignore": ["lm_head"],
        "config_groups": {"group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 8, "type": "float", "strategy": layout, "symmetric": True, "dynamic": False},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True, "dynamic": True},
        }},
    }


def quantize_layout(tensors: dict, layout: str, block: int = 128) -> tuple[dict, dict]:
    """(checkpoint tensors with linears FP8 in `layout`, the same tensors dequantized to float32)."""
    out, dequantized = dict(tensors), {}
    for name, w in tensors.items():
        if not LINEAR.fullmatch(name):
            continue
        if layout == "block":
            q, s = quantize_blocks(w, block)
            out[name + "_scale_inv"], dequantized[name] = s, dequantize(q, s, block)
        else:
            q, s = quantize_rows(w) if layout == "channel" else quantize_tensor(w)
            out[name + "_scale"], dequantized[name] = s, dequantize(q, s)
        out[name] = q
    return out, dequantized


def make_fp8_checkpoint(family: str, root: Path, layout: str, block: int = 128, **overrides) -> tuple[Path, Path, dict]:
    """(16-bit checkpoint, FP8 checkpoint of it in `layout`, HF name -> dequantized float32 linear weight);
    `overrides` change the family's config (vocab_size, ...)."""
    src = make_checkpoint(family, root / "bf16", dtype=torch.bfloat16, **overrides)
    dst = root / f"fp8-{layout}"
    shutil.copytree(src, dst)
    tensors = safetensors.torch.load_file(str(src / "model.safetensors"))
    quantized, dequantized = quantize_layout(tensors, layout, block)
    safetensors.torch.save_file(quantized, str(dst / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["quantization_config"] = quantization_config(layout, block)
    (dst / "config.json").write_text(json.dumps(config))
    return src, dst, dequantized


def reference_model(src: Path, dequantized: dict):
    """transformers' model of `src` in float32 with its linear weights replaced by `dequantized`."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    state = model.state_dict()
    with torch.no_grad():
        for name, w in dequantized.items():
            state[name].copy_(w)
    return model.eval()
