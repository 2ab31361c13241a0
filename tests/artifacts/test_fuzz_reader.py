"""Mutated manifests, plans and locks: each is accepted, or refused with llmc's own error type."""

import copy
import json
import math
import tempfile
from pathlib import Path

import pytest
from bundle_samples import KERNEL_INDEX, LOCK, MANIFEST_FIELDS, PLAN, PREFILL_PLAN, write_bundle
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmc.artifacts import (FORMAT_VERSION, Bundle, dumps, root_digest, sha256_bytes, validate_lock,
                            validate_manifest, validate_plan)
from llmc.cli.main import main
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
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
    return {**manifest, "root_digest": root_digest(manifest)}


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


# ---- verified but not valid: every mutation is re-digested, so only the checks of meaning can refuse it ----

REDIGESTED = settings(FUZZ, max_examples=350)


def _redigest(bundle_dir: Path, rel: str, obj) -> bool:
    """Write `obj` as `rel` and fix the manifest (file digest, root) so that the bundle verifies."""
    try:
        data = dumps(obj)
    except (TypeError, ValueError):
        return False
    manifest = json.loads((bundle_dir / "manifest.json").read_bytes())
    if rel == "manifest.json":
        manifest = obj
    else:
        (bundle_dir / rel).write_bytes(data)
        manifest["files"][rel] = {"sha256": sha256_bytes(data), "size": len(data)}
    if isinstance(manifest, dict):
        manifest["root_digest"] = root_digest(manifest)
    try:
        (bundle_dir / "manifest.json").write_bytes(dumps(manifest))
    except (TypeError, ValueError):
        return False
    return True


def _check_edit(bundle_dir: Path, rel: str, obj) -> None:
    """Re-digest the edit, open the bundle, then restore it: every example starts from the same bundle."""
    saved = {name: (bundle_dir / name).read_bytes() for name in ("manifest.json", rel)}
    try:
        if _redigest(bundle_dir, rel, obj):
            _opens_or_refuses(bundle_dir)
    finally:
        for name, data in saved.items():
            (bundle_dir / name).write_bytes(data)


def _opens_or_refuses(bundle_dir: Path) -> None:
    try:
        with Bundle.open(bundle_dir, verify="full") as bundle:
            for name in bundle.plans():  # what the runtime reads at load
                bundle.plan(name)
            bundle.lock()
    except LlmcError as e:
        assert "\n" not in str(e), str(e)


@REDIGESTED
@given(data=st.data())
def test_redigested_manifests(bundle_dir, data):
    manifest = json.loads((bundle_dir / "manifest.json").read_bytes())
    body = {k: v for k, v in manifest.items() if k not in ("files", "root_digest")}
    mutated = _mutate(data, body)
    if isinstance(mutated, dict):
        mutated["files"] = manifest["files"]
    _check_edit(bundle_dir, "manifest.json", mutated)


@REDIGESTED
@given(data=st.data(), which=st.sampled_from([("decode_b2", PLAN), ("prefill_t16", PREFILL_PLAN)]))
def test_redigested_plans(bundle_dir, data, which):
    name, plan = which
    _check_edit(bundle_dir, f"plans/{name}.json", _mutate(data, plan))


@REDIGESTED
@given(data=st.data())
def test_redigested_kernel_indexes(bundle_dir, data):
    _check_edit(bundle_dir, "kernels/index.json", _mutate(data, KERNEL_INDEX))


@pytest.mark.parametrize("rel, edit, words", [
    ("plans/decode_b2.json", lambda p: p.update(arena_bytes=2**62), ("arena_bytes", "more than its buffers need")),
    ("plans/decode_b2.json", lambda p: (p["buffers"]["t1"].update(shape=[2**40]), p.update(arena_bytes=2**41 + 1536)),
     ("arena_bytes", "far more than 2 tokens of this model need")),
    ("plans/decode_b2.json", lambda p: p["steps"][0]["args"][1].update(weight="nope.weight"), ("nope.weight",)),
    ("plans/decode_b2.json", lambda p: p["steps"][2]["args"][2].update(layer=7), ("kv_cache.num_layers",)),
    ("plans/decode_b2.json", lambda p: p["steps"][0].pop("launches"), ("runs no kernel",)),
    ("plans/decode_b2.json", lambda p: p["buffers"]["t2"].update(shape=[2, 100]), ("outputs.logits",)),
    ("plans/decode_b2.json", lambda p: p["inputs"]["input_ids"].update(shape=[3]), ("inputs.input_ids",)),
    ("plans/decode_b2.json", lambda p: p["steps"][1]["launches"][0]["params"].pop(), ("parameters",)),
    ("plans/decode_b2.json", lambda p: p["steps"][1]["launches"][0].update(grid=[1, 2**20]), ("grid[1]",)),
    ("plans/decode_b2.json", lambda p: p.update(max_blocks_per_seq=2**40), ("max_blocks_per_seq",)),
    ("kernels/index.json", lambda k: next(iter(k["kernels"].values())).update(num_warps=64), ("num_warps",)),
    ("kernels/index.json", lambda k: next(iter(k["kernels"].values())).update(target="sm80"), ("sm80",)),
    ("manifest.json", lambda m: m["model"].update(eos_token_ids=[10**6]), ("eos_token_ids",)),
    ("manifest.json", lambda m: m["build"].update(max_seq_len=2**40), ("max_seq_len",)),
    ("manifest.json", lambda m: m["kv_cache"].update(block_size=8), ("kv_cache.block_size",)),
    ("manifest.json", lambda m: m["target"].update(backend="tpu"), ("target.backend",)),
])
def test_verified_but_not_valid_is_one_line(bundle_dir, rel, edit, words):
    obj = json.loads((bundle_dir / rel).read_bytes())
    edit(obj)
    assert _redigest(bundle_dir, rel, obj)
    assert not Bundle.open(bundle_dir, verify="none").check().mismatches  # it verifies
    with pytest.raises(LlmcError) as e:
        Bundle.open(bundle_dir, verify="full")
    message = str(e.value)
    assert "\n" not in message and message.endswith("rebuild it with llmc build"), message
    for word in words:
        assert word in message, message
    for args in (["verify", str(bundle_dir)], ["inspect", str(bundle_dir)]):  # through the CLI: exit 2, one line
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 2 and result.output.strip() == f"error: {message}", result.output
