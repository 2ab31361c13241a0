import json
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from llmc.artifacts import check_checkpoint, check_safetensors, check_sharded_index
from llmc.errors import UserError


def _write(path, header, data=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)
    return path


def _t(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def test_valid_file_passes(tmp_path):
    tensors = {"a": np.zeros((3, 5), np.float32), "b": np.ones((7,), np.int64), "empty": np.zeros((0, 4), np.float16)}
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "np"})
    assert check_safetensors(tmp_path / "model.safetensors") == {
        "a": ("F32", (3, 5)), "b": ("I64", (7,)), "empty": ("F16", (0, 4))}


def test_hand_made_valid_file(tmp_path):
    header = {"__metadata__": {"k": "v"}, "w": _t("BF16", [2, 3], 0, 12), "v": _t("U8", [4], 12, 16)}
    assert check_safetensors(_write(tmp_path / "m.safetensors", header, b"\0" * 16)) == {
        "w": ("BF16", (2, 3)), "v": ("U8", (4,))}


W = "model.layers.0.mlp.up_proj.weight"


@pytest.mark.parametrize("header, data, length, message", [
    ({"a": _t("F32", [2], 0, 8)}, b"\0" * 8, 10**6, "header length 1000000 bytes is longer than the"),
    ({"a": _t("F32", [2], 0, 8)}, b"", 200_000_000, "header length 200000000 bytes is over the 100 MB limit"),
    (b'{"a": {"dtype": "F32",', b"", None, "invalid JSON in the header"),
    (b'\xff{}', b"", None, "the header is not valid UTF-8"),
    (b'[1, 2]', b"", None, "the header must be a JSON object"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], '
     b'"data_offsets": [4, 8]}}', b"\0" * 8, None, "tensor 'a' appears twice in the header"),
    (b'{"a": {"dtype": "F32", "dtype": "F16", "shape": [1], "data_offsets": [0, 4]}}', b"\0" * 4, None,
     "tensor 'a' has field 'dtype' twice"),
    ({W: _t("BF16", [64, 32], 0, 1000)}, b"\0" * 1000, None,
     f"tensor '{W}' has 1000 bytes of data but shape [64, 32] of BF16 needs 4096"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 4, 12)}, b"\0" * 12, None,
     "tensor 'b' (bytes 4..12) overlaps tensor 'a' (ending at byte 8)"),
    ({"a": _t("F32", [2], 0, 8), "b": _t("F32", [2], 8, 16)}, b"\0" * 12, None,
     "tensor 'b' has data_offsets [8, 16] past the end of the data (12 bytes)"),
    ({"a": _t("F32", [2], 0, 8)}, b"\0" * 4, None, "past the end of the data (4 bytes)"),  # truncated data
    ({"a": _t("F32", [2], 4, 12)}, b"\0" * 12, None, "bytes 0..4 of the data belong to no tensor"),
    ({"a": _t("F32", [2], 0, 8)}, b"\0" * 10, None, "the last 2 bytes of the data belong to no tensor"),
    ({"a": _t("F32", [2], 8, 0)}, b"\0" * 8, None, "field 'data_offsets' must be [begin, end]"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, "8"]}}, b"\0" * 8, None, "field 'data_offsets'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8, None, "field 'data_offsets'"),
    ({"a": _t("F32", [2, -1], 0, 8)}, b"\0" * 8, None, "field 'shape' must be a list of non-negative integers"),
    ({"a": _t("Q4", [2], 0, 8)}, b"\0" * 8, None, "tensor 'a' has dtype 'Q4', which llmc does not read"),
    ({"a": [1]}, b"", None, "tensor 'a' must be a JSON object"),
    ({"__metadata__": {"k": 1}}, b"", None, "'__metadata__' must map names to strings"),
])
def test_bad_files(tmp_path, header, data, length, message):
    path = _write(tmp_path / "model.safetensors", header, data, length)
    with pytest.raises(UserError) as e:
        check_safetensors(path)
    assert str(e.value).startswith("model.safetensors: ") and "\n" not in str(e.value)
    assert message in str(e.value)


def test_truncated_file(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\1\2\3\4\5")
    with pytest.raises(UserError, match="model.safetensors: file is 5 bytes, too short for a safetensors header"):
        check_safetensors(tmp_path / "model.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="model.safetensors: file not found"):
        check_safetensors(tmp_path / "model.safetensors")


def _shard(path, names):
    save_file({n: np.zeros((2,), np.float32) for n in names}, path)


def test_sharded_checkpoint(tmp_path):
    _shard(tmp_path / "model-00001-of-00002.safetensors", ["a", "b"])
    _shard(tmp_path / "model-00002-of-00002.safetensors", ["c"])
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert check_sharded_index(tmp_path) == weight_map
    assert check_checkpoint(tmp_path)["c"] == ("model-00002-of-00002.safetensors", "F32", (2,))


@pytest.mark.parametrize("index, message", [
    ('{"weight_map": {', "model.safetensors.index.json: invalid JSON"),
    ('{"weight_map": {"a": "s1.safetensors", "a": "s2.safetensors"}}', "key 'a' appears twice"),
    ('{"metadata": {}}', "field 'weight_map' must be an object mapping tensor names to shard files"),
    ('{"weight_map": {"a": "s1.safetensors", "b": "s9.safetensors"}}', "names shard 's9.safetensors', which is missing"),
    ('{"weight_map": {"a": "../s1.safetensors"}}', "names shard '../s1.safetensors', which is not a file inside"),
])
def test_bad_index(tmp_path, index, message):
    _shard(tmp_path / "s1.safetensors", ["a"])
    (tmp_path / "model.safetensors.index.json").write_text(index)
    with pytest.raises(UserError) as e:
        check_sharded_index(tmp_path)
    assert message in str(e.value)


def test_checkpoint_consistency(tmp_path):
    _shard(tmp_path / "s1.safetensors", ["a", "b"])
    _shard(tmp_path / "s2.safetensors", ["b"])
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    with pytest.raises(UserError, match="s2.safetensors: tensor 'b' is also in s1.safetensors"):
        check_checkpoint(tmp_path)
    index.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "zz": "s1.safetensors"}}))
    with pytest.raises(UserError, match="maps tensor 'zz' to s1.safetensors, which does not hold it"):
        check_checkpoint(tmp_path)
    index.unlink()
    with pytest.raises(UserError, match="has neither model.safetensors nor model.safetensors.index.json"):
        check_checkpoint(tmp_path)
