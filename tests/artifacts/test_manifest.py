import hashlib

import pytest
from bundle_samples import KERNEL_ID, KERNEL_INDEX, LOCK, MANIFEST_FIELDS, PLAN, fresh

from llmc.artifacts import (FORMAT_VERSION, dumps, is_safe_relpath, root_digest, validate_kernel_index, validate_lock,
                            validate_manifest, validate_plan)
from llmc.errors import BundleError

FILES = {"b.bin": {"sha256": "b" * 64, "size": 2}, "a/x.json": {"sha256": "a" * 64, "size": 10}}


def manifest() -> dict:
    obj = {**fresh(MANIFEST_FIELDS), "format_version": FORMAT_VERSION, "files": fresh(FILES)}
    return {**obj, "root_digest": root_digest(obj)}


def test_root_digest_covers_the_whole_manifest():
    obj = manifest()
    body = {k: v for k, v in obj.items() if k != "root_digest"}
    assert root_digest(obj) == hashlib.sha256(dumps(body)).hexdigest() == root_digest(body)
    for edit in (("model", "eos_token_ids"), ("build", "max_seq_len"), ("kv_cache", "dtype")):
        changed = fresh(obj)
        changed[edit[0]][edit[1]] = [7] if edit[1] == "eos_token_ids" else 8 if edit[1] == "max_seq_len" else "float32"
        assert root_digest(changed) != root_digest(obj), edit


def test_valid_objects_pass():
    assert validate_manifest(manifest())["files"] == FILES
    assert validate_plan(fresh(PLAN), "decode_b2")["name"] == "decode_b2"
    validate_lock(fresh(LOCK))
    validate_kernel_index(fresh(KERNEL_INDEX))


def _set(obj, path, value):
    *parents, last = path
    for key in parents:
        obj = obj[key]
    if value is DELETE:
        del obj[last]
    else:
        obj[last] = value


DELETE = object()


@pytest.mark.parametrize("path, value, message", [
    (["target", "name"], 3, "manifest.json: field 'target.name' must be a non-empty string"),
    (["target"], DELETE, "manifest.json: field 'target' is missing"),
    (["target"], [], "manifest.json: field 'target' must be an object"),
    (["model", "num_layers"], True, "field 'model.num_layers' must be a positive integer"),
    (["model", "dtype"], "bf16", "field 'model.dtype' must be a dtype name"),
    (["model", "eos_token_ids"], [1, "2"], "field 'model.eos_token_ids' must be a list of non-negative integers"),
    (["build", "op_priority"], {"rms_norm": "native"}, "field 'build.op_priority' must be an object mapping"),
    (["kv_cache", "block_size"], 0, "field 'kv_cache.block_size' must be a positive integer"),
    (["toolchain"], {"torch": 2}, "field 'toolchain' must be an object of version strings or null"),
    (["root_digest"], "ABC", "field 'root_digest' must be a sha256 hex digest"),
    (["files", "b.bin", "size"], -1, "field \"files['b.bin'].size\" must be a non-negative integer"),
    (["files", "../evil"], {"sha256": "a" * 64, "size": 1}, "must name a file inside the bundle"),
    (["files", "manifest.json"], {"sha256": "a" * 64, "size": 1}, "must name a file inside the bundle"),
    (["format_version"], "1", "field 'format_version' must be an integer"),
    (["format_version"], DELETE, "field 'format_version' is missing"),
    (["format_version"], 3, "bundle format 3 is newer than this llmc (reads 2): upgrade llmc"),
    (["format_version"], 1, "bundle format 1 is older than this llmc reads (2): its root digest does not cover"),
    (["format_version"], 0, "bundle format 0 is not a valid format version"),
])
def test_manifest_errors(path, value, message):
    obj = manifest()
    _set(obj, path, value)
    with pytest.raises(BundleError) as e:
        validate_manifest(obj)
    assert message in str(e.value)


def test_manifest_must_be_object():
    with pytest.raises(BundleError, match="manifest.json: must be a JSON object"):
        validate_manifest([1])


@pytest.mark.parametrize("path, value, message", [
    (["name"], "decode_b4", "field 'name' must be 'decode_b2', the plan's file name"),
    (["kind"], "mixed", "field 'kind' must be 'decode' or 'prefill'"),
    (["buffers", "t1", "offset"], 8, "field 'buffers.t1.offset' must be a multiple of 256"),
    (["buffers", "t3", "shape"], [1000], "field 'buffers.t3' ends at byte 5024, past arena_bytes 1536"),
    (["buffers", "t1", "dtype"], "float128", "field 'buffers.t1.dtype' must be a dtype name"),
    (["buffers", "t1", "shape"], [2, 1.5], "field 'buffers.t1.shape' must be a list of non-negative integers"),
    (["outputs", "logits"], "t9", "field 'outputs.logits' must name a buffer of 'buffers'"),
    (["steps"], {}, "field 'steps' must be a list"),
    (["steps", 0, "op"], None, "field 'steps[0].op' must be a non-empty string"),
    (["steps", 0, "provider"], DELETE, "field 'steps[0].provider' is missing"),
    (["steps", 1, "args", 0], {"buffer": "nope"}, "field 'steps[1].args[0].buffer' must name a buffer"),
    (["steps", 1, "args", 0], {"buffer": "t1", "x": 1}, "field 'steps[1].args[0]' must be one of"),
    (["steps", 1, "args", 0], "t1", "field 'steps[1].args[0]' must be one of"),
    (["steps", 1, "args", 2], {"const": "eps"}, "field 'steps[1].args[2].const' must be a number"),
    (["steps", 1, "args", 2], {"scalar": 1, "type": "i32"}, "field 'steps[1].args[2]' must be one of"),
    (["steps", 0, "args", 0], {"input": "token_types"}, "field 'steps[0].args[0].input' must name an input"),
    (["steps", 2, "args", 2], {"kv_cache": "q", "layer": 0}, "field 'steps[2].args[2].kv_cache' must be 'k' or 'v'"),
    (["steps", 2, "args", 3], {"kv_cache": "v", "layer": -1}, "field 'steps[2].args[3].layer' must be a non-negative"),
    (["steps", 2, "args", 3], {"kv_cache": "v"}, "field 'steps[2].args[3]' must be one of"),
    (["steps", 3, "args", 0, 1], {"buffer": "zz"}, "field 'steps[3].args[0][1].buffer' must name a buffer"),
    (["steps", 1, "outputs", 0], "t7", "field 'steps[1].outputs[0]' must name a buffer"),
    (["steps", 1, "launches", 0, "grid"], [0, 1, 1], "field 'steps[1].launches[0].grid' must be 1 to 3 positive"),
    (["steps", 1, "launches", 0, "grid"], [1, 1, 1, 1], "must be 1 to 3 positive integers"),
    (["steps", 1, "launches", 0, "params", 3], {"scalar": 2**31, "type": "i32"},
     "field 'steps[1].launches[0].params[3].scalar' must be an integer in i32 range"),
    (["steps", 1, "launches", 0, "params", 3], {"scalar": 1, "type": "u8"}, "params[3].type' must be 'i32'"),
    (["steps", 1, "launches", 0, "params", 4], {"scalar": float("inf"), "type": "fp32"}, "must be a finite number"),
    (["steps", 1, "launches", 0, "params", 5], {"null": False}, "params[5].null' must be true"),
    (["steps", 1, "launches", 0, "params", 5], {"const": 1}, "field 'steps[1].launches[0].params[5]' must be one of"),
])
def test_plan_errors(path, value, message):
    obj = fresh(PLAN)
    _set(obj, path, value)
    with pytest.raises(BundleError) as e:
        validate_plan(obj, "decode_b2")
    assert str(e.value).startswith("plans/decode_b2.json: field ")
    assert message in str(e.value)


@pytest.mark.parametrize("path, value, message", [
    (["nodes"], DELETE, "impls.lock.json: field 'nodes' is missing"),
    (["nodes", "nodeonly"], {"op": "a", "provider": "b", "rejected": {}}, "must be named '<plan>/<node>'"),
    (["nodes", "decode_b2/norm", "rejected"], {"native": 1}, "field \"nodes['decode_b2/norm'].rejected\" must be"),
])
def test_lock_errors(path, value, message):
    obj = fresh(LOCK)
    _set(obj, path, value)
    with pytest.raises(BundleError, match="^impls.lock.json: ") as e:
        validate_lock(obj)
    assert message in str(e.value)


@pytest.mark.parametrize("path, value, message", [
    (["kernels", "abc"], {}, "must be keyed by the kernel's sha256"),
    (["kernels", KERNEL_ID, "file"], "/abs/x.cubin", ".file\" must be a path under kernels/"),
    (["kernels", KERNEL_ID, "num_warps"], 0, ".num_warps\" must be a positive integer"),
    (["kernels", KERNEL_ID, "params", 0, "type"], 5, ".params[0].type\" must be a non-empty string"),
])
def test_kernel_index_errors(path, value, message):
    obj = fresh(KERNEL_INDEX)
    _set(obj, path, value)
    with pytest.raises(BundleError, match="^kernels/index.json: ") as e:
        validate_kernel_index(obj)
    assert message in str(e.value)


@pytest.mark.parametrize("name, ok", [
    ("a", True), ("weights/model.safetensors", True), ("", False), ("/abs", False), ("a/../b", False),
    ("./a", False), ("a//b", False), ("a/", False), ("a\\b", False), ("a\0b", False), (None, False), ("..", False),
])
def test_is_safe_relpath(name, ok):
    assert is_safe_relpath(name) is ok
