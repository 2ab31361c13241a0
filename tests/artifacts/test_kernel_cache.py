"""The kernel cache: content-addressed entries, atomic writes, damage detected, `llmc cache`."""

from __future__ import annotations

import hashlib
import json
import multiprocessing

import pytest
from click.testing import CliRunner

from llmc.artifacts.kernel_cache import KernelCache, default_root
from llmc.cli.cache import cache as cache_cli

KEY = hashlib.sha256(b"some kernel").hexdigest()
PAYLOAD = b"\x7fELF" + bytes(range(256)) * 40
META = {"name": "rms_norm_kernel", "num_warps": 4, "params": [{"name": "x_ptr", "type": "*bf16"}]}


@pytest.fixture
def store(tmp_path):
    return KernelCache(tmp_path / "cache")


def test_put_then_get(store):
    assert store.get(KEY) is None and store.load(KEY) is None
    store.put(KEY, PAYLOAD, META)
    assert store.get(KEY) == PAYLOAD
    assert store.load(KEY) == (PAYLOAD, META)
    bin_path, json_path = store.kernels_dir / KEY[:2] / f"{KEY}.bin", store.kernels_dir / KEY[:2] / f"{KEY}.json"
    assert bin_path.read_bytes() == PAYLOAD
    record = json.loads(json_path.read_text())
    fields = {"key": KEY, "sha256": hashlib.sha256(PAYLOAD).hexdigest(), "size": len(PAYLOAD), "meta": META}
    checksum = hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert record == {**fields, "checksum": checksum}
    assert sorted(p.name for p in bin_path.parent.iterdir()) == sorted([bin_path.name, json_path.name])  # no temp files left


def test_root_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMC_CACHE_DIR", str(tmp_path / "env-cache"))
    assert KernelCache().root == default_root() == tmp_path / "env-cache"
    monkeypatch.delenv("LLMC_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert KernelCache().root == tmp_path / "home" / ".cache" / "llmc"


def test_keys_must_be_digests(store):
    for bad in ("", "../etc/passwd", KEY.upper(), KEY[:-1]):
        with pytest.raises(ValueError):
            store.get(bad)


def _edit_meta(path, **changes):
    record = json.loads(path.read_text())
    record["meta"].update(changes)
    path.write_text(json.dumps(record))


def _edit_record(path, drop):
    record = json.loads(path.read_text())
    del record[drop]
    path.write_text(json.dumps(record))


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b, j: b.write_bytes(b.read_bytes()[:100]), id="truncated payload"),
        pytest.param(lambda b, j: b.write_bytes(b.read_bytes()[:-1] + b"X"), id="flipped byte"),
        pytest.param(lambda b, j: b.unlink(), id="missing payload"),
        pytest.param(lambda b, j: j.write_text(j.read_text()[:20]), id="truncated json"),
        pytest.param(lambda b, j: j.write_text(json.dumps({"key": KEY})), id="json without digest"),
        pytest.param(lambda b, j: _edit_meta(j, num_warps=8), id="edited launch metadata"),
        pytest.param(lambda b, j: _edit_meta(j, shared=1 << 20), id="edited shared memory"),
        pytest.param(lambda b, j: _edit_record(j, "checksum"), id="entry without checksum"),
    ],
)
def test_damaged_entry_is_a_miss_and_is_removed(store, damage):
    store.put(KEY, PAYLOAD, META)
    folder = store.kernels_dir / KEY[:2]
    damage(folder / f"{KEY}.bin", folder / f"{KEY}.json")
    assert store.get(KEY) is None
    assert not (folder / f"{KEY}.json").exists()
    store.put(KEY, PAYLOAD, META)  # and a rebuild writes it whole again
    assert store.load(KEY) == (PAYLOAD, META)


def test_payload_without_json_is_not_an_entry(store):
    store.put(KEY, PAYLOAD, META)
    (store.kernels_dir / KEY[:2] / f"{KEY}.json").unlink()  # as if the writer died between the two files
    assert store.get(KEY) is None
    assert store.info()["entries"] == 0


def test_info_and_clear(store):
    assert store.info() == {"path": str(store.root), "entries": 0, "bytes": 0}
    keys = [hashlib.sha256(bytes([i])).hexdigest() for i in range(3)]
    for k in keys:
        store.put(k, PAYLOAD, META)
    info = store.info()
    assert info["entries"] == 3 and info["bytes"] > 3 * len(PAYLOAD)
    assert store.clear() == 3
    assert store.info()["entries"] == 0 and all(store.get(k) is None for k in keys)
    assert store.clear() == 0


def _writer(root, barrier, rounds, errors):
    try:
        store = KernelCache(root)
        barrier.wait()
        for _ in range(rounds):
            store.put(KEY, PAYLOAD, META)
            entry = store.load(KEY)
            assert entry is None or entry == (PAYLOAD, META)  # never a partial entry
    except BaseException as e:  # noqa: BLE001 - report any failure to the parent
        errors.put(repr(e))
        raise


def test_two_processes_writing_the_same_key_both_succeed(store):
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(store.root, barrier, 200, errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0], errors.get_nowait() if not errors.empty() else "a writer hung"
    assert store.load(KEY) == (PAYLOAD, META)
    leftovers = [p.name for p in (store.kernels_dir / KEY[:2]).iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cli_info_and_clear(tmp_path):
    root = tmp_path / "cli-cache"
    KernelCache(root).put(KEY, PAYLOAD, META)
    runner = CliRunner()
    env = {"LLMC_CACHE_DIR": str(root)}
    result = runner.invoke(cache_cli, ["info"], env=env)
    assert result.exit_code == 0, result.output
    assert str(root) in result.output and "kernels: 1" in result.output
    result = runner.invoke(cache_cli, ["info", "--json"], env=env)
    assert json.loads(result.output)["entries"] == 1
    result = runner.invoke(cache_cli, ["clear"], env=env)
    assert result.exit_code == 0 and "removed 1 kernel " in result.output
    assert KernelCache(root).info()["entries"] == 0
