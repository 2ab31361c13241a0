"""Packing kernel parameters from the ABI, and placing and uploading weights: no GPU needed."""

from __future__ import annotations

import ctypes
import struct

import pytest
from fake_cuda import WEIGHTS, FakeDriver, safetensors_bytes
from llmc.errors import BundleError
from llmc.runtime.backends.cuda_driver import Driver
from llmc.runtime.backends.cuda_launch import ParamBlock, pack_scalar, prepare_launch
from llmc.runtime.backends.cuda_memory import (
    KvSpec,
    kv_blocks_for_memory,
    layout_weights,
    upload_weights,
)

# ---- packing ----------------------------------------------------------------------------------


def test_pack_scalar_bytes_for_each_type():
    assert pack_scalar(-1, "i32", "x") == b"\xff\xff\xff\xff"
    assert pack_scalar(2**40 + 3, "i64", "x") == struct.pack("<q", 2**40 + 3)
    assert pack_scalar(1.5, "fp32", "x") == struct.pack("<f", 1.5)
    assert pack_scalar(7, "fp32", "x") == struct.pack("<f", 7.0)
    assert pack_scalar(1.0, "bf16", "x") == b"\x80\x3f"
    assert pack_scalar(2**32 - 1, "u32", "x") == b"\xff\xff\xff\xff"
    assert pack_scalar(3.0, "i32", "x") == struct.pack("<i", 3)
    with pytest.raises(BundleError, match="does not fit a i32"):
        pack_scalar(2**31, "i32", "x")
    with pytest.raises(BundleError, match="integer parameter"):
        pack_scalar(0.5, "i64", "x")
    with pytest.raises(BundleError, match="not supported"):
        pack_scalar(1, "nvTmaDesc", "x")


def test_param_block_points_at_aligned_slots_holding_the_values():
    block = ParamBlock([struct.pack("<Q", 0xDEADBEEF00), struct.pack("<i", -5), struct.pack("<f", 0.25)])
    ptrs = (ctypes.c_void_p * 3).from_address(block.address)
    assert all(p % 8 == 0 for p in ptrs)
    assert ctypes.string_at(ptrs[0], 8) == struct.pack("<Q", 0xDEADBEEF00)
    assert ctypes.string_at(ptrs[1], 4) == struct.pack("<i", -5)
    assert block.raw(2, 4) == struct.pack("<f", 0.25)


def _entry(types, **kw):
    entry = {"name": "k", "file": "kernels/k.cubin", "params": [{"name": f"p{i}", "type": t} for i, t in enumerate(types)],
             "num_warps": 8, "num_ctas": 1, "shared": 100, "global_scratch_size": 0, "global_scratch_align": 1,
             "profile_scratch_size": 0, "profile_scratch_align": 1}
    entry.update(kw)
    return entry


def _resolve(ref, where):
    return {"buffer": 0x1000, "input": 0x2000, "weight": 0x3000, "kv_cache": 0x4000}[next(iter(ref))] + 16


def test_prepare_launch_resolves_pointers_and_appends_null_scratch():
    entry = _entry(["*bf16", "*fp32", "*i32", "*fp32", "*i8", "i32", "i64", "fp32", "*i8", "*i8"])
    params = [{"buffer": "t"}, {"weight": "w"}, {"input": "input_ids"}, {"kv_cache": "k", "layer": 0}, {"null": True},
              {"scalar": -7, "type": "i32"}, {"scalar": 1 << 33, "type": "i64"}, {"scalar": 1e-6, "type": "fp32"}]
    launch = prepare_launch({"kernel": "k", "grid": [5, 2], "params": params}, entry, "F", _resolve,
                            {"global": 0xAAA00, "profile": 0xBBB00}, "p step 0 (n)")
    assert launch.grid == (5, 2, 1) and launch.block_x == 256 and launch.shared == 100 and launch.func == "F"
    p = launch.params
    assert p.count == 10
    ptr = lambda i: struct.unpack("<Q", p.raw(i))[0]
    assert [ptr(i) for i in range(5)] == [0x1010, 0x3010, 0x2010, 0x4010, 0]
    assert p.raw(5, 4) == struct.pack("<i", -7)
    assert p.raw(6) == struct.pack("<q", 1 << 33)
    assert p.raw(7, 4) == struct.pack("<f", 1e-6)
    assert ptr(8) == 0 and ptr(9) == 0  # scratch sizes are 0: null pointers


def test_prepare_launch_passes_scratch_when_the_kernel_needs_it():
    entry = _entry(["*fp32", "*i8", "*i8"], global_scratch_size=64, profile_scratch_size=8)
    launch = prepare_launch({"kernel": "k", "grid": [3], "params": [{"buffer": "t"}]}, entry, "F", _resolve,
                            {"global": 0xAAA00, "profile": 0xBBB00}, "w")
    assert struct.unpack("<Q", launch.params.raw(1))[0] == 0xAAA00
    assert struct.unpack("<Q", launch.params.raw(2))[0] == 0xBBB00


@pytest.mark.parametrize("params, types, message", [
    ([{"buffer": "t"}], ["*fp32", "*fp32", "*i8", "*i8"], "passes 1 parameters; the kernel's ABI has 4"),
    ([{"scalar": 1, "type": "i32"}], ["*fp32", "*i8", "*i8"], "takes a pointer"),
    ([{"buffer": "t"}], ["i32", "*i8", "*i8"], "takes a i32 scalar"),
    ([{"scalar": 1.5, "type": "fp32"}], ["i32", "*i8", "*i8"], "does not match the kernel's i32"),
])
def test_prepare_launch_refuses_a_launch_that_does_not_match_the_abi(params, types, message):
    with pytest.raises(BundleError, match=message):
        prepare_launch({"kernel": "k", "grid": [1], "params": params}, _entry(types), "F", _resolve,
                       {"global": 0, "profile": 0}, "w")


def test_prepare_launch_refuses_clusters():
    with pytest.raises(BundleError, match="num_ctas=2"):
        prepare_launch({"kernel": "k", "grid": [1], "params": []}, _entry(["*i8", "*i8"], num_ctas=2), "F",
                       _resolve, {}, "w")


# ---- memory ----------------------------------------------------------------------------------


def test_weights_are_placed_256_aligned_and_uploaded_byte_exact_through_small_staging(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes(WEIGHTS))
    layout = layout_weights([path])
    assert [s.offset for s in layout.slots.values()] == [0, 256, 512]
    assert layout.data_bytes == 256 + 6 + 16 and layout.total_bytes == 768
    fake = FakeDriver()
    drv = Driver(fake)
    base = drv.alloc(layout.total_bytes)
    upload_weights(drv, layout, base, "stream", staging_bytes=7)  # chunks cut through every tensor
    for name, dtype, shape, raw in WEIGHTS:
        assert fake.read(base + layout.slots[name].offset, len(raw)) == raw
    assert not fake.host  # staging freed
    assert fake.calls.count("cuMemcpyHtoDAsync") >= (256 + 6 + 16) // 7


def test_kv_blocks_from_memory_and_cap():
    spec = KvSpec(num_layers=2, block_size=16, num_kv_heads=2, head_dim=64, dtype="bfloat16")
    assert spec.bytes_per_block == 2 * 2 * 16 * 2 * 64 * 2
    free = 1000 * spec.bytes_per_block + 100
    blocks, why = kv_blocks_for_memory(free, 0.5, 0, spec, cap=10_000)
    assert (blocks, why) == (500, "gpu memory")
    assert kv_blocks_for_memory(free, 0.5, 0, spec, cap=64) == (64, "block count limit")
    assert kv_blocks_for_memory(free, 0.9, free, spec, cap=64)[0] == 0
    assert spec.pointer(1 << 20, 10, 1, "v") == (1 << 20) + 3 * spec.pool_bytes(10)


