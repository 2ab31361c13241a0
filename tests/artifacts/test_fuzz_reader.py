"""Mutated manifests, plans and locks: each is accepted, or refused with llmc's own error type."""

import copy
import json
import math
import tempfile
from pathlib import Path

import pytest
from bundle_samples import LOCK, MANIFEST_FIELDS, PLAN, write_bundle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmc.artifacts import FORMAT_VERSION, Bundle, root_digest, validate_lock, validate_manifest, validate_plan
from llmc.errors import LlmcError

FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Values that are wrong in every way a hand-edited or corrupted file can be wrong; drawing from a
# fixed list keeps each example cheap, so 400 per target run in seconds.
GARBAGE = st.sampled_from([
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**70), 1.5, -0.0, float("nan"), float("inf"), "", "x", "t1",
    "decode_b2", "bfloat16", "k", "i32", "../x", "a" * 64, "\x00", "ü", b"\x00", (1,), [], [1], [1, "2"], ["t1"],
    [[]], [[[[[[1]]]]]], [None], {}, {"buffer": "t1"}, {"buffer": "t1", "const": 1}, {"const": "x"}, {"null": True},
    {"kv_cache": "k", "layer": 0}, {"scalar": 1, "type": "i64"}, {1: 2}, {"a": {"b": {}}}, {"shape": [], "dtype": ""},
]).map(copy.deepcopy) | st.integers(-(2**70), 2**70) | st.text(max_size=4)


def _near_misses(value):
    """Values that look almost right: the bugs validators miss are in these, not in random junk."""
    if isinstance(value, bool):
        return [not value, 1, "true"]
    if isinstance(value, int):
        return [value + 1, -value - 1, 0, True, float(value), str(value), 2**63]
    if isinstance(value, float):
        return [float("nan"), float("inf"), int(value) if math.isfinite(value) else 0, str(value)]
    if isinstance(value, str):
        return ["", value + "x", value.upper(), value[:-1], None, 7]
    if isinstance(value, list):
        return [value[:-1], value + value[-1:], [], {}, tuple(value)]
    if isinstance(value, dict):
        return [{}, [], list(value.values())]
    return [None]


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


def _mutate(data, obj):
    obj = copy.deepcopy(obj)
    for _ in range(data.draw(st.integers(1, 4), label="n_mutations")):
        paths = [p for p in _paths(obj) if p]
        if not paths:
            return data.draw(GARBAGE)
        path = data.draw(st.sampled_from(paths), label="path")
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        key, value = path[-1], parent[path[-1]]
        action = data.draw(st.sampled_from(["delete", "near_miss", "garbage", "insert", "swap"]), label="action")
        if action == "delete":
            del parent[key]
        elif action == "near_miss":
            parent[key] = data.draw(st.sampled_from(_near_misses(value)))
        elif action == "garbage":
            parent[key] = data.draw(GARBAGE)
        elif action == "insert" and isinstance(value, dict):
            value[data.draw(st.sampled_from(["", "x", "buffer", "type", "null", "layer", 0]))] = data.draw(GARBAGE)
        elif action == "insert" and isinstance(value, list):
            value.insert(data.draw(st.integers(0, len(value))), data.draw(GARBAGE))
        else:  # swap in a copy of another part of the same object
            parent[key] = copy.deepcopy(_get(obj, data.draw(st.sampled_from(paths))))
    return obj


def _get(obj, path):
    for key in path:
        obj = obj[key]
    return obj


def _accepted_or_llmc_error(fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except LlmcError:
        return False


def _through_reader(path, obj, read) -> None:
    """Write `obj` as the file at `path` (when JSON can hold it), read it back through Bundle."""
    try:
        data = json.dumps(obj).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return
    path.write_bytes(data)
    _accepted_or_llmc_error(read)


@pytest.fixture
def bundle_dir():
    """A fresh bundle per test, on tmpfs where there is one (file writes there cost microseconds)."""
    parent = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="llmc-fuzz-", dir=parent) as tmp:
        write_bundle(Path(tmp) / "b.llmc")
        yield Path(tmp) / "b.llmc"


def _manifest():
    manifest = json.loads(json.dumps(MANIFEST_FIELDS))
    files = {"weights/model.safetensors": {"sha256": "a" * 64, "size": 100}}
    return {**manifest, "format_version": FORMAT_VERSION, "files": files, "root_digest": root_digest(files)}


def test_originals_are_valid():
    validate_manifest(_manifest()), validate_plan(copy.deepcopy(PLAN), "decode_b2"), validate_lock(copy.deepcopy(LOCK))


@FUZZ
@given(data=st.data())
def test_mutated_manifests(bundle_dir, data):
    obj = _mutate(data, _manifest())
    _accepted_or_llmc_error(validate_manifest, obj)
    _through_reader(bundle_dir / "manifest.json", obj, lambda: Bundle.open(bundle_dir, verify="fast"))


@FUZZ
@given(data=st.data())
def test_mutated_plans(bundle_dir, data):
    obj = _mutate(data, PLAN)
    _accepted_or_llmc_error(validate_plan, obj, "decode_b2")
    _through_reader(bundle_dir / "plans/decode_b2.json", obj,
                    lambda: Bundle.open(bundle_dir, verify="none").plan("decode_b2"))


@FUZZ
@given(data=st.data())
def test_mutated_locks(bundle_dir, data):
    obj = _mutate(data, LOCK)
    _accepted_or_llmc_error(validate_lock, obj)
    _through_reader(bundle_dir / "impls.lock.json", obj, lambda: Bundle.open(bundle_dir, verify="none").lock())
