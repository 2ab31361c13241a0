"""A tiny bundle the fake driver's kernels compute on, and the fake driver wired to them."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from llmc.artifacts import Bundle, BundleWriter, sha256_bytes
from llmc.artifacts.plan_schema import step_input_specs
from fake_driver import OK, SIZES, CUresult, FakeDriver  # noqa: F401  (re-exported to the tests)

# ---- a tiny bundle that the fake kernels compute on -----------------------------------------

V, H, BLOCK = 16, 4, 4  # vocab, hidden (= head_dim, one KV head), KV block size
ABI = {
    "embed_kernel": ["*i32", "*fp32", "*fp32", "*fp32", "i32", "*i8", "*i8"],
    "kv_write_kernel": ["*fp32", "*fp32", "*fp32", "*i32", "i32", "*i8", "*i8"],
    "sample_kernel": ["*fp32", "*i32", "*fp32", "*i32", "i32", "fp32", "i64", "*i8", "*i8"],
}
KERNEL_META = {"embed_kernel": {"shared": 0, "global_scratch_size": 0},
               "kv_write_kernel": {"shared": 65536, "global_scratch_size": 0},
               "sample_kernel": {"shared": 1024, "global_scratch_size": 32},
               "edit_kernel": {"shared": 0, "global_scratch_size": 0}}
EDIT_ABI = {"edit_kernel": ["*fp32", "*i32", "*fp32", "*i32", "*i32", "i32", "i32", "*i8", "*i8"]}  # edits=True only
BINARIES = {name: f"FAKE CUBIN {name}".encode() for name in ABI}
IDS = {name: sha256_bytes(f"FAKE CUBIN {name}".encode()) for name in {**ABI, **EDIT_ABI}}


def _f32(fake, addr, n):
    return np.frombuffer(fake.read(addr, 4 * n), dtype=np.float32)


def _i32(fake, addr, n):
    return np.frombuffer(fake.read(addr, 4 * n), dtype=np.int32)


def embed_kernel(fake, grid, v):  # out[t] = table[ids[t]] * scale
    ids_p, table_p, scale_p, out_p, n, gs, ps = v
    assert gs == 0 and ps == 0
    ids, scale = _i32(fake, ids_p, n), _f32(fake, scale_p, H)
    for t, i in enumerate(ids):
        fake.write(out_p + 16 * t, (_f32(fake, table_p + 16 * int(i), H) * scale).astype(np.float32).tobytes())


def kv_write_kernel(fake, grid, v):  # k[slot] = v[slot] = x[t]
    x_p, k_p, v_p, slots_p, n, _, _ = v
    for t, slot in enumerate(_i32(fake, slots_p, n)):
        if slot >= 0:
            row = fake.read(x_p + 16 * t, 16)
            fake.write(k_p + 16 * int(slot), row)
            fake.write(v_p + 16 * int(slot), row)


def sample_kernel(fake, grid, v):  # token[r] = int(x[idx[r], 0]); logits[r] = one-hot of it
    x_p, idx_p, logits_p, out_p, n, temp, seed, gs, ps = v
    assert temp == 0.0 and seed == 2**40 + 3 and gs != 0 and gs % 128 == 0 and ps == 0
    for r, i in enumerate(_i32(fake, idx_p, n)):
        tok = int(_f32(fake, x_p + 16 * int(i), 1)[0])
        fake.write(out_p + 4 * r, struct.pack("<i", tok))
        fake.write(logits_p + 4 * V * r, np.eye(V, dtype=np.float32)[tok].tobytes())


def edit_kernel(fake, grid, v):  # logits masked on bitmask_on rows, then edited (kernels/logit_edits.py)
    logits_p, index_p, values_p, bitmask_p, on_p, rows, num_edits, _, _ = v
    x = _f32(fake, logits_p, rows * V).reshape(rows, V).copy()
    words = _i32(fake, bitmask_p, rows * -(-V // 32)).reshape(rows, -1)
    allowed = (words[:, np.arange(V) // 32] >> (np.arange(V) % 32)) & 1 != 0
    x[(_i32(fake, on_p, rows) != 0)[:, None] & ~allowed] = -np.inf
    index = _i32(fake, index_p, 2 * num_edits).reshape(num_edits, 2)
    r, t = index[:, 0], index[:, 1]
    live = (r >= 0) & (r < rows) & (t >= 0) & (t < V)
    scale, bias, add = _f32(fake, values_p, 3 * num_edits).reshape(num_edits, 3)[live].T
    y = x[r[live], t[live]] + bias
    x[r[live], t[live]] = np.where(y > 0, y / scale, y * scale) + add
    fake.write(logits_p, x.astype(np.float32).tobytes())


def plan_json(name, kind, T, B, R, arena_extra=0, edits=False):
    k = {"kv_cache": "k", "layer": 0}
    vv = {"kv_cache": "v", "layer": 0}
    plan = {
        "name": name, "kind": kind, "num_tokens": T, "num_seqs": B, "num_logits": R, "max_blocks_per_seq": 4,
        "arena_bytes": 768 + arena_extra,
        "inputs": step_input_specs(T, B, R, 4, V),
        "buffers": {"x": {"offset": 0, "shape": [T, H], "dtype": "float32"},
                    "logits": {"offset": 256, "shape": [R, V], "dtype": "float32"},
                    "next": {"offset": 512, "shape": [R], "dtype": "int32"}},
        "outputs": {"logits": "logits", "next_tokens": "next"},
        "steps": [
            {"node": "embed", "op": "embedding", "provider": "triton", "outputs": ["x"],
             "args": [{"input": "input_ids"}, {"weight": "embed"}],
             "launches": [{"kernel": IDS["embed_kernel"], "grid": [T], "params": [
                 {"input": "input_ids"}, {"weight": "embed"}, {"weight": "scale"}, {"buffer": "x"},
                 {"scalar": T, "type": "i32"}]}]},
            {"node": "kv", "op": "kv_cache_write", "provider": "triton", "outputs": [],
             "args": [{"buffer": "x"}, {"buffer": "x"}, k, vv, {"input": "slot_mapping"}],
             "launches": [{"kernel": IDS["kv_write_kernel"], "grid": [T, 1], "params": [
                 {"buffer": "x"}, k, vv, {"input": "slot_mapping"}, {"scalar": T, "type": "i32"}]}]},
            {"node": "sample", "op": "sample", "provider": "triton", "outputs": ["next"],
             "args": [{"buffer": "x"}],
             "launches": [{"kernel": IDS["sample_kernel"], "grid": [R, 1, 1], "params": [
                 {"buffer": "x"}, {"input": "logits_indices"}, {"buffer": "logits"}, {"buffer": "next"},
                 {"scalar": R, "type": "i32"}, {"scalar": 0.0, "type": "fp32"}, {"scalar": 2**40 + 3, "type": "i64"}]}]},
        ],
    }
    if edits:  # the logits copied out are edited after sampling (the tokens are not)
        sparse = [{"input": key} for key in ("logit_edit_index", "logit_edit_values", "allowed_bitmask", "bitmask_on")]
        plan["steps"].append(
            {"node": "edit", "op": "edit_logits", "provider": "triton", "outputs": [], "args": [{"buffer": "logits"}],
             "launches": [{"kernel": IDS["edit_kernel"], "grid": [1], "params": [
                 {"buffer": "logits"}, *sparse, {"scalar": R, "type": "i32"},
                 {"scalar": plan["inputs"]["logit_edit_index"]["shape"][0], "type": "i32"}]}]})
    return plan


def safetensors_bytes(tensors: list[tuple[str, str, list[int], bytes]]) -> bytes:
    header, offset, data = {}, 0, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


TABLE = np.array([[(i + 1) % V, 0.5, 0.25, 2.0] for i in range(V)], dtype=np.float32)
WEIGHTS = [("embed", "F32", [V, H], TABLE.tobytes()), ("odd", "U8", [6], b"abcdef"),
           ("scale", "F32", [H], np.ones(H, dtype=np.float32).tobytes())]


def write_fake_bundle(out, target=("sm90", "cuda", 90), warp_size=32, edits=False):
    """edits: every plan ends with edit_kernel, which applies the logit edits and bitmask to the logits."""
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", safetensors_bytes(WEIGHTS))
        for plan in (plan_json("decode_b1", "decode", 1, 1, 1, edits=edits),
                     plan_json("decode_b2", "decode", 2, 2, 2, edits=edits),
                     plan_json("prefill_t8", "prefill", 8, 2, 2, arena_extra=256, edits=edits)):
            w.write_json(f"plans/{plan['name']}.json", plan)
        index = {}
        for name, types in ({**ABI, **EDIT_ABI} if edits else ABI).items():
            index[IDS[name]] = {
                "file": f"kernels/{IDS[name]}.cubin", "name": name, "target": target[0],
                "params": [{"name": f"p{i}", "type": t} for i, t in enumerate(types)],
                "num_warps": 4, "num_ctas": 1, "shared": KERNEL_META[name]["shared"],
                "global_scratch_size": KERNEL_META[name]["global_scratch_size"], "global_scratch_align": 128,
                "profile_scratch_size": 0, "profile_scratch_align": 1}
            w.write_bytes(f"kernels/{IDS[name]}.cubin", f"FAKE CUBIN {name}".encode())
        w.write_json("kernels/index.json", {"kernels": index})
        w.write_json("impls.lock.json", {"nodes": {}})
        return w.commit({
            "llmc_version": "0.1.0", "target": {"name": target[0], "backend": target[1], "arch": target[2], "warp_size": warp_size},
            "model": {"architecture": "Qwen3ForCausalLM", "dtype": "float32", "vocab_size": V, "hidden_size": H,
                      "num_layers": 1, "num_q_heads": 1, "num_kv_heads": 1, "head_dim": H, "intermediate_size": 8,
                      "max_position_embeddings": 64, "eos_token_ids": [0], "bos_token_id": None, "sliding_window": 0},
            "build": {"dtype": "float32", "max_batch_size": 2, "max_seq_len": 16, "kv_block_size": BLOCK,
                      "max_num_batched_tokens": 8, "op_priority": {}, "decode_buckets": [1, 2], "prefill_buckets": [8]},
            "kv_cache": {"num_layers": 1, "block_size": BLOCK, "num_kv_heads": 1, "head_dim": H, "dtype": "float32"},
            "toolchain": {"triton": "3.9.0"}, "build_key": "k" * 64,
        })


@pytest.fixture
def bundle(tmp_path):
    write_fake_bundle(tmp_path / "b.llmc")
    with Bundle.open(tmp_path / "b.llmc") as b:
        yield b


def fake_driver(**kw):
    kernels = {"embed_kernel": embed_kernel, "kv_write_kernel": kv_write_kernel, "sample_kernel": sample_kernel,
               "edit_kernel": edit_kernel}
    return FakeDriver(abi={**ABI, **EDIT_ABI}, kernels=kernels, **kw)


def step_inputs(plan, ids, slots, logits_indices=None):
    T, R = plan["num_tokens"], plan["num_logits"]
    inputs = {key: np.zeros(spec["shape"], dtype=spec["dtype"]) for key, spec in plan["inputs"].items()}
    inputs["input_ids"][: len(ids)] = ids
    inputs["slot_mapping"][:] = -1
    inputs["slot_mapping"][: len(slots)] = slots
    inputs["top_p"][:] = 1.0
    inputs["logit_edit_index"][:] = -1  # no edits
    inputs["logits_indices"][:] = logits_indices if logits_indices is not None else np.arange(R) % T
    return inputs
