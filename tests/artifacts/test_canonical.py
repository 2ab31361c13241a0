import hashlib
import math

import pytest

from llmc.artifacts import dumps, load_file, loads, sha256_bytes, sha256_file
from llmc.errors import BundleError, UserError


def test_dumps_is_canonical():
    assert dumps({"b": 1, "a": [1.5, None, True], "é": "ü"}) == '{"a":[1.5,null,true],"b":1,"é":"ü"}\n'.encode()
    assert dumps({"a": 1, "b": 2}) == dumps({"b": 2, "a": 1})


def test_dumps_refuses_nan():
    with pytest.raises(ValueError):
        dumps({"x": math.nan})


def test_sha256(tmp_path):
    data = bytes(range(256)) * 5000  # several read chunks
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == sha256_bytes(data) == hashlib.sha256(data).hexdigest()


def test_loads_round_trip():
    obj = {"k": [1, 2.5, "s", None, {"x": False}]}
    assert loads(dumps(obj), "x.json") == obj


@pytest.mark.parametrize("data, words", [
    (b'{"a": 1,', "x.json: invalid JSON"),
    (b'{"a": 1, "a": 2}', "key 'a' appears twice"),
    (b'{"a": NaN}', "NaN is not a JSON number"),
    (b'\xff\xfe', "not valid UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "invalid JSON"),
    (b'{"a": ' + b"9" * 5000 + b"}", "invalid JSON"),
])
def test_loads_errors_name_the_file(data, words):
    with pytest.raises(BundleError, match="^x.json: ") as e:
        loads(data, "x.json", BundleError, "rebuild it")
    assert words in str(e.value) and str(e.value).endswith("; rebuild it")


def test_load_file_missing(tmp_path):
    with pytest.raises(UserError, match="config.json: file not found"):
        load_file(tmp_path / "config.json")
