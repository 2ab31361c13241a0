"""Small valid manifests, plans, locks and bundles shared by the artifacts tests."""

from __future__ import annotations

import copy

from llmc.artifacts import BundleWriter, sha256_bytes

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
        "prefill_buckets": [16, 32],
    },
    "kv_cache": {"num_layers": 2, "block_size": 16, "num_kv_heads": 2, "head_dim": 16, "dtype": "bfloat16"},
    "toolchain": {"python": "3.11", "torch": "2.6.0", "triton": None},
    "build_key": "0" * 64,
}

PLAN = {
    "name": "decode_b2", "kind": "decode", "num_tokens": 2, "num_seqs": 2, "num_logits": 2,
    "max_blocks_per_seq": 16, "arena_bytes": 1024,
    "inputs": {"input_ids": {"shape": [2], "dtype": "int32"}, "slot_mapping": {"shape": [2], "dtype": "int32"}},
    "buffers": {"t1": {"offset": 0, "shape": [2, 64], "dtype": "bfloat16"},
                "t2": {"offset": 256, "shape": [2, 64], "dtype": "bfloat16"},
                "t3": {"offset": 512, "shape": [2], "dtype": "int32"}},
    "outputs": {"logits": "t2", "next_tokens": "t3"},
    "steps": [
        {"node": "embed", "op": "embedding", "provider": "native",
         "args": [{"input": "input_ids"}, {"weight": "embed_tokens.weight"}], "outputs": ["t1"]},
        {"node": "norm", "op": "rms_norm", "provider": "triton",
         "args": [{"buffer": "t1"}, {"weight": "norm.weight"}, {"const": 1e-06}], "outputs": ["t2"],
         "launches": [{"kernel": KERNEL_ID, "grid": [2, 1, 1],
                       "params": [{"buffer": "t1"}, {"weight": "norm.weight"}, {"buffer": "t2"},
                                  {"scalar": 64, "type": "i32"}, {"scalar": 1e-06, "type": "fp32"},
                                  {"null": True}]}]},
        {"node": "cache", "op": "kv_cache_write", "provider": "native",
         "args": [{"buffer": "t1"}, {"buffer": "t1"}, {"kv_cache": "k", "layer": 0},
                  {"kv_cache": "v", "layer": 0}, {"input": "slot_mapping"}], "outputs": []},
        {"node": "cat", "op": "concat", "provider": "native",
         "args": [[{"buffer": "t1"}, {"buffer": "t2"}]], "outputs": ["t3"]},
    ],
}

LOCK = {"nodes": {"decode_b2/norm": {"op": "rms_norm", "provider": "triton", "rejected": {"native": "priority"}},
                  "decode_b2/embed": {"op": "embedding", "provider": "native", "rejected": {}}}}

KERNEL_INDEX = {"kernels": {KERNEL_ID: {
    "file": f"kernels/{KERNEL_ID}.cubin", "name": "rms_norm_kernel", "target": "sm90",
    "params": [{"name": "x_ptr", "type": "*bf16"}, {"name": "global_scratch", "type": "*i8"}],
    "num_warps": 4, "num_ctas": 1, "shared": 0, "global_scratch_size": 0, "global_scratch_align": 1,
    "profile_scratch_size": 0, "profile_scratch_align": 1}}}


def fresh(obj):
    return copy.deepcopy(obj)


def write_bundle(out, weights: bytes = b"W" * 100, extra: dict[str, bytes] | None = None) -> dict:
    """A small valid sm90 bundle at `out`; returns its manifest."""
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", weights)
        w.write_json("plans/decode_b2.json", PLAN)
        w.write_json("impls.lock.json", LOCK)
        w.write_json("kernels/index.json", KERNEL_INDEX)
        w.write_bytes(f"kernels/{KERNEL_ID}.cubin", KERNEL_BYTES)
        w.write_json("tokenizer/tokenizer_config.json", {"chat_template": "{{ messages }}", "name": "ünï"})
        for rel, data in (extra or {}).items():
            w.write_bytes(rel, data)
        return w.commit(fresh(MANIFEST_FIELDS))
