"""Small valid manifests, plans, locks and bundles shared by the artifacts tests."""

from __future__ import annotations

import copy
import json
import math
import struct

from llmc.artifacts import BundleWriter, sha256_bytes
from llmc.artifacts.plan_schema import step_input_specs

KERNEL_BYTES = b"\x7fELF fake cubin"
KERNEL_ID = sha256_bytes(KERNEL_BYTES)

MANIFEST_FIELDS = {
    "llmc_version": "0.1.0",
    "target": {"name": "sm90", "backend": "cuda", "arch": 90, "warp_size": 32},
    "model": {
        "architecture": "Qwen3ForCausalLM", "dtype": "bfloat16", "vocab_size": 128, "hidden_size": 64,
        "num_layers": 2, "num_q_heads": 4, "num_kv_heads": 2, "head_dim": 16, "intermediate_size": 96,
        "max_position_embeddings": 256, "eos_token_ids": [1, 2], "bos_token_id": None, "sliding_window": 0,
    },
    "build": {
        "dtype": "bfloat16", "max_batch_size": 2, "max_seq_len": 256, "kv_block_size": 16,
        "max_num_batched_tokens": 32, "op_priority": {"rms_norm": ["native"]}, "decode_buckets": [1, 2],
        "prefill_buckets": [16],
    },
    "kv_cache": {"num_layers": 2, "block_size": 16, "num_kv_heads": 2, "head_dim": 16, "dtype": "bfloat16"},
    "toolchain": {"python": "3.11", "torch": "2.6.0", "triton": None},
    "build_key": "0" * 64,
}

def make_plan(name: str, kind: str, num_tokens: int) -> dict:
    """A plan whose every step launches the one sample kernel; `t2` holds the logits."""
    t = num_tokens
    params = lambda *refs: [*refs, {"scalar": 64, "type": "i32"}, {"scalar": 1e-06, "type": "fp32"}, {"null": True}]
    launch = lambda *refs: [{"kernel": KERNEL_ID, "grid": [2, 1, 1], "params": params(*refs)}]
    return {
        "name": name, "kind": kind, "num_tokens": t, "num_seqs": 2, "num_logits": 2,
        "max_blocks_per_seq": 16, "arena_bytes": 1280 + -(-t * 128 // 256) * 256,
        "inputs": step_input_specs(t, 2, 2, 16, MANIFEST_FIELDS["model"]["vocab_size"]),
        "buffers": {"t1": {"offset": 1280, "shape": [t, 64], "dtype": "bfloat16"},
                    "t2": {"offset": 0, "shape": [2, 128], "dtype": "float32"},
                    "t3": {"offset": 1024, "shape": [2], "dtype": "int32"}},
        "outputs": {"logits": "t2", "next_tokens": "t3"},
        "steps": [
            {"node": "embed", "op": "embedding", "provider": "triton",
             "args": [{"input": "input_ids"}, {"weight": "embed_tokens.weight"}], "outputs": ["t1"],
             "launches": launch({"input": "input_ids"}, {"weight": "embed_tokens.weight"}, {"buffer": "t1"})},
            {"node": "norm", "op": "rms_norm", "provider": "triton",
             "args": [{"buffer": "t1"}, {"weight": "norm.weight"}, {"const": 1e-06}], "outputs": ["t2"],
             "launches": launch({"buffer": "t1"}, {"weight": "norm.weight"}, {"buffer": "t2"})},
            {"node": "cache", "op": "kv_cache_write", "provider": "triton",
             "args": [{"buffer": "t1"}, {"buffer": "t1"}, {"kv_cache": "k", "layer": 0},
                      {"kv_cache": "v", "layer": 1}, {"input": "slot_mapping"}], "outputs": [],
             "launches": launch({"kv_cache": "k", "layer": 0}, {"kv_cache": "v", "layer": 1}, {"input": "slot_mapping"})},
            {"node": "cat", "op": "concat", "provider": "triton",
             "args": [[{"buffer": "t1"}, {"buffer": "t2"}]], "outputs": ["t3"],
             "launches": launch({"buffer": "t1"}, {"buffer": "t2"}, {"buffer": "t3"})},
        ],
    }


PLAN = make_plan("decode_b2", "decode", 2)
PREFILL_PLAN = make_plan("prefill_t16", "prefill", 16)

LOCK = {"nodes": {"decode_b2/norm": {"op": "rms_norm", "provider": "triton", "rejected": {"native": "priority"}},
                  "decode_b2/embed": {"op": "embedding", "provider": "native", "rejected": {}}}}

KERNEL_INDEX = {"kernels": {KERNEL_ID: {
    "file": f"kernels/{KERNEL_ID}.cubin", "name": "rms_norm_kernel", "target": "sm90",
    "params": [{"name": "a_ptr", "type": "*bf16"}, {"name": "b_ptr", "type": "*bf16"}, {"name": "c_ptr", "type": "*fp32"},
               {"name": "n", "type": "i32"}, {"name": "eps", "type": "fp32"}, {"name": "d_ptr", "type": "*i8"},
               {"name": "global_scratch", "type": "*i8"}, {"name": "profile_scratch", "type": "*i8"}],
    "num_warps": 4, "num_ctas": 1, "shared": 0, "global_scratch_size": 0, "global_scratch_align": 1,
    "profile_scratch_size": 0, "profile_scratch_align": 1}}}


def fresh(obj):
    return copy.deepcopy(obj)


def safetensors_bytes(tensors: dict[str, tuple[str, list[int]]]) -> bytes:
    """A safetensors file of zeros: name -> (dtype, shape)."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * {"BF16": 2, "F32": 4}[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + bytes(offset)


WEIGHTS = safetensors_bytes({"embed_tokens.weight": ("BF16", [128, 64]), "norm.weight": ("BF16", [64])})


def write_bundle(out, weights: bytes = WEIGHTS, extra: dict[str, bytes] | None = None) -> dict:
    """A small valid sm90 bundle at `out`; returns its manifest."""
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", weights)
        w.write_json("plans/decode_b2.json", PLAN)
        w.write_json("plans/prefill_t16.json", PREFILL_PLAN)
        w.write_json("impls.lock.json", LOCK)
        w.write_json("kernels/index.json", KERNEL_INDEX)
        w.write_bytes(f"kernels/{KERNEL_ID}.cubin", KERNEL_BYTES)
        w.write_json("tokenizer/tokenizer_config.json", {"chat_template": "{{ messages }}", "name": "ünï"})
        for rel, data in (extra or {}).items():
            w.write_bytes(rel, data)
        return w.commit(fresh(MANIFEST_FIELDS))
