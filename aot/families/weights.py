"""The weight map of one checkpoint: every IR parameter, the HF tensors it is made of, their shapes.

Ingest reads exactly these tensors: a missing one, a misshapen one, or one the map does not name
is an error. A parameter made of several tensors (stacked experts) or changed at build (Gemma's
`1 + w`) names its transform in `aot/weight_transforms.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..spec import ModelSpec
from .description import LLAMA_GLOBAL, QK_NORM, Family

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # buffers old checkpoints saved; recomputed at build


@dataclass(frozen=True)
class Source:
    ir: str
    hf: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # one per HF tensor
    transform: str = "copy"  # a function of aot/weight_transforms.py
    optional: bool = False


def _shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """IR stem -> shape of a dense layer's tensors."""
    h, i, hd, q, kv = spec.hidden_size, spec.intermediate_size, spec.head_dim, spec.q_size, spec.kv_size
    return {
        "input_layernorm.weight": (h,), "post_attention_layernorm.weight": (h,),
        "pre_feedforward_layernorm.weight": (h,), "post_feedforward_layernorm.weight": (h,),
        "q_proj.weight": (q, h), "k_proj.weight": (kv, h), "v_proj.weight": (kv, h), "qkv_proj.weight": (q + 2 * kv, h),
        "o_proj.weight": (h, q), "gate_proj.weight": (i, h), "up_proj.weight": (i, h), "gate_up_proj.weight": (2 * i, h),
        "down_proj.weight": (h, i), "q_proj.bias": (q,), "k_proj.bias": (kv,), "v_proj.bias": (kv,), "o_proj.bias": (h,),
        "gate_proj.bias": (i,), "up_proj.bias": (i,), "down_proj.bias": (h,), "q_norm.weight": (hd,), "k_norm.weight": (hd,),
        "embed_tokens.weight": (spec.vocab_size, h), "norm.weight": (h,), "lm_head.weight": (spec.vocab_size, h),
    }


def _one(family: Family, ir: str, stem: str, hf: str, shapes: dict, optional: bool = False) -> Source:
    transform = "plus_one" if family.norm_plus_one and stem.endswith("norm.weight") else "copy"
    return Source(ir, (hf,), (shapes[stem],), transform, optional)


def _experts(family: Family, spec: ModelSpec, layer: int, present: set[str]) -> list[Source]:
    moe, p = family.moe, f"layers.{layer}."
    e, h, i = spec.num_experts, spec.hidden_size, spec.moe_intermediate_size
    router = Source(p + "router.weight", (moe.router.format(layer),), ((e, h),))
    gate_up, down = (name.format(layer) for name in moe.stacked)
    if gate_up in present or down in present:  # transformers 5 keeps experts stacked
        return [router, Source(p + "experts.gate_up_proj", (gate_up,), ((e, 2 * i, h),)),
                Source(p + "experts.down_proj", (down,), ((e, h, i),))]
    gate, up, down = ([t.format(layer, e=x) for x in range(e)] for t in moe.experts)
    return [router, Source(p + "experts.gate_up_proj", tuple(gate + up), ((i, h),) * (2 * e), "stack_gate_up"),
            Source(p + "experts.down_proj", tuple(down), ((h, i),) * e, "stack")]


def weight_map(family: Family, spec: ModelSpec, present: set[str]) -> list[Source]:
    """Every IR parameter of this checkpoint; `present` (the checkpoint's tensor names) picks between
    the spellings a family allows (per-expert or stacked experts)."""
    shapes = _shapes(spec)
    sources = [_one(family, ir, ir, hf, shapes, optional=ir == "lm_head.weight" and spec.tie_word_embeddings)
               for ir, hf in LLAMA_GLOBAL.items()]
    attention = {**family.attention, **(QK_NORM if family.qk_norm else {})}
    for layer in range(spec.num_layers):
        p = f"layers.{layer}."
        sources += [_one(family, p + ir, ir, hf.format(layer), shapes) for ir, hf in attention.items()]
        if spec.is_moe(layer):
            sources += _experts(family, spec, layer, present)
            optional = {k: v for k, v in family.optional.items() if k.split(".")[0] not in ("gate_proj", "up_proj", "down_proj")}
        else:
            sources += [_one(family, p + ir, ir, hf.format(layer), shapes) for ir, hf in family.mlp.items()]
            optional = family.optional
        sources += [_one(family, p + ir, ir, hf.format(layer), shapes, optional=True) for ir, hf in optional.items()]
    return sources
