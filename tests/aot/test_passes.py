"""Each pass on its own, on a traced one-layer Qwen3 (q/k norm, biasless) and Qwen2 (q/k/v bias)."""

import torch

from llmc.aot.ir import op_of
from llmc.aot.model import trace
from llmc.aot.passes import fuse_add_norm, fuse_linear_prologue, fuse_rope_cache, merge_linears
from llmc.aot.passes.dce import eliminate_dead_code
from llmc.aot.passes.rewrite import PassContext, apply_rules
from llmc.aot.reference import prefill_logits
from llmc.aot.spec import ModelSpec

H, I, HD, Q, KV = 32, 48, 8, 4, 2


def _model(qk_norm: bool, bias: bool):
    spec = ModelSpec("Qwen3ForCausalLM" if qk_norm else "Qwen2ForCausalLM", H, 2, Q, KV, HD, I, 50, 1e-6, 64, True,
                     10000.0, {}, (0, 0), qk_norm)
    g = torch.Generator().manual_seed(0)
    shapes = {"input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,), "q_proj.weight": (Q * HD, H),
              "k_proj.weight": (KV * HD, H), "v_proj.weight": (KV * HD, H), "o_proj.weight": (H, Q * HD),
              "gate_proj.weight": (I, H), "up_proj.weight": (I, H), "down_proj.weight": (H, I)}
    if qk_norm:
        shapes.update({"q_norm.weight": (HD,), "k_norm.weight": (HD,)})
    if bias:
        shapes.update({"q_proj.bias": (Q * HD,), "k_proj.bias": (KV * HD,), "v_proj.bias": (KV * HD,)})
    params = {f"layers.{i}.{k}": torch.randn(s, generator=g) * 0.3 for i in range(2) for k, s in shapes.items()}
    params.update({"embed_tokens.weight": torch.randn(50, H, generator=g), "norm.weight": torch.rand(H, generator=g) + 0.5})
    from llmc.aot.rope import cos_sin_cache

    params["rope.cos_sin"] = cos_sin_cache(HD, 10000.0, {}, 64)
    return spec, trace(spec, params), params


def _ops(gm) -> list[str]:
    return [op_of(n.target).name for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target)]


def _logits(spec, gm, params):
    layout = {"block_size": 4, "num_kv_heads": KV, "head_dim": HD, "dtype": "float32"}
    return prefill_logits(gm, params, layout, spec.num_layers, [3, 9, 27, 4, 11, 42, 7])


def _run(rules, qk_norm=True, bias=False):
    spec, gm, params = _model(qk_norm, bias)
    before = _logits(spec, gm, dict(params))
    ctx = PassContext(params)
    count = apply_rules(gm, rules, ctx)
    eliminate_dead_code(gm, params)
    gm.recompile()
    after = _logits(spec, gm, params)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    return gm, params, count


def test_add_rms_norm_fusion():
    gm, _, count = _run(fuse_add_norm.RULES)
    ops = _ops(gm)
    assert count == 4 and ops.count("fused_add_rms_norm") == 4 and "add" not in ops


def test_merge_linears_concatenates_weights_once():
    gm, params, count = _run(merge_linears.RULES, bias=True)
    assert "layers.0.qkv_proj.weight" in params and "layers.0.gate_up_proj.weight" in params
    assert "layers.0.q_proj.weight" not in params and "layers.0.up_proj.weight" not in params
    assert params["layers.0.qkv_proj.bias"].shape == ((Q + 2 * KV) * HD,)
    ops = _ops(gm)
    assert ops.count("linear") == 2 * 4 and "concat" not in ops  # qkv, o, gate_up, down per layer


def test_rope_cache_fusion_after_merge():
    gm, _, _ = _run(merge_linears.RULES + fuse_rope_cache.RULES)
    ops = _ops(gm)
    assert ops.count("qkv_rope_cache") == 2
    assert not {"rotary_embedding", "kv_cache_write", "head_rms_norm", "split"} & set(ops)


def test_rope_cache_fusion_without_qk_norm():
    gm, _, _ = _run(merge_linears.RULES + fuse_rope_cache.RULES, qk_norm=False, bias=True)
    assert _ops(gm).count("qkv_rope_cache") == 2


def test_linear_prologue_fusion():
    # layer 0's input norm is a plain rms_norm, every other norm before a linear a fused add + norm
    rules = fuse_add_norm.RULES, merge_linears.RULES, fuse_rope_cache.RULES, fuse_linear_prologue.RULES
    for qk_norm, bias in ((True, False), (False, True)):
        spec, gm, params = _model(qk_norm, bias)
        before = _logits(spec, gm, dict(params))
        ctx = PassContext(params)
        for stage in rules:
            apply_rules(gm, stage, ctx)
            eliminate_dead_code(gm, params)
        gm.recompile()
        torch.testing.assert_close(_logits(spec, gm, params), before, rtol=1e-5, atol=1e-5)
        ops = _ops(gm)
        assert ops.count("norm_linear") == 2 * 2 and ops.count("silu_mul_linear") == 2
        assert ops.count("fused_add_rms_norm") == 1 and ops.index("fused_add_rms_norm") == ops.index("lm_head") - 1
        assert not {"silu_and_mul", "rms_norm"} & set(ops)
        assert ops.count("linear") == 2  # o_proj per layer


def test_linear_prologue_fusion_alone():
    # without merged linears each norm feeds several linears and stays; silu_and_mul(concat) still fuses
    gm, _, count = _run(fuse_add_norm.RULES + fuse_linear_prologue.RULES)
    ops = _ops(gm)
    assert count == 4 + 2 and "norm_linear" not in ops and ops.count("silu_mul_linear") == 2 and "concat" in ops


def test_rules_do_not_fire_without_their_pattern():
    _, _, count = _run(fuse_rope_cache.RULES)  # no merged qkv: nothing to fuse
    assert count == 0


def test_dce_keeps_cache_writes_and_drops_unused_weights():
    spec, gm, params = _model(True, False)
    params["unused.weight"] = torch.zeros(1)
    assert eliminate_dead_code(gm, params) == 0
    assert "kv_cache_write" in _ops(gm)
