"""The FP8 rewrite rules on real traced graphs (`stop_after="fuse"`), each stage's result on its own.

linear(x, W8) -> fp8_linear; siblings merge with their scales; the norm and silu(gate) * up become
the activation quantizer's prologue; a linear the checkpoint left 16-bit stays a plain linear.
"""

from collections import Counter

import safetensors.torch
import torch

from fp8_checkpoints import make_fp8_checkpoint
from llmc.aot.build import BuildConfig, build
from llmc.aot.ir import op_of

CONFIG = BuildConfig(target="cpu", dtype="float32", max_seq_len=32, max_batch_size=2, max_num_batched_tokens=16)


def _ops(gm) -> Counter:
    return Counter(op_of(n.target).name for n in gm.graph.nodes if n.op == "call_function" and op_of(n.target))


def test_fp8_linears_merge_and_take_prologues(tmp_path):
    src, model_dir, _ = make_fp8_checkpoint("qwen3", tmp_path, "block", 32)
    fused = build(model_dir, tmp_path / "x", CONFIG, stop_after="fuse")
    ops = _ops(fused.graph)
    assert ops["fp8_norm_linear"] == 4 and ops["fp8_silu_mul_linear"] == 2 and ops["fp8_linear"] == 2, ops
    assert not ops["linear"] and not ops["norm_linear"] and not ops["silu_mul_linear"], ops
    w = fused.weights
    q, kv, h = 4 * 32, 2 * 32, 64  # qwen3 tiny: 4 q heads, 2 kv heads, head_dim 32
    assert w["layers.0.qkv_proj.weight"].dtype == torch.float8_e4m3fn and w["layers.0.qkv_proj.weight"].shape == (q + 2 * kv, h)
    assert w["layers.0.qkv_proj.weight_scale"].shape == (q + 2 * kv, 2)  # block rows per weight row, 64 / 32 groups
    assert "layers.0.q_proj.weight" not in w and "layers.0.q_proj.weight_scale" not in w
    assert any("fp8_linear(x, A), fp8_linear(x, B)" in line for line in fused.pass_log)
    # the merged scale is the checkpoint's block scales, each block row repeated for its weight rows
    hf = safetensors.torch.load_file(str(model_dir / "model.safetensors"))
    blocks = hf["model.layers.0.self_attn.k_proj.weight_scale_inv"]
    assert torch.equal(w["layers.0.qkv_proj.weight_scale"].load()[q:q + kv], blocks.repeat_interleave(32, 0)[:kv])


def test_a_linear_left_16_bit_stays_plain(tmp_path):
    src, model_dir, _ = make_fp8_checkpoint("llama", tmp_path, "channel")
    path = model_dir / "model.safetensors"
    tensors = safetensors.torch.load_file(str(path))
    name = "model.layers.1.mlp.down_proj.weight"  # as if the config's ignore list named it
    tensors[name] = safetensors.torch.load_file(str(src / "model.safetensors"))[name]
    del tensors[name + "_scale"]
    safetensors.torch.save_file(tensors, str(path))
    fused = build(model_dir, tmp_path / "x", CONFIG, stop_after="fuse")
    ops = _ops(fused.graph)
    assert ops["silu_mul_linear"] == 1 and ops["fp8_silu_mul_linear"] == 1, ops
    assert fused.weights["layers.1.down_proj.weight"].dtype == torch.float32
