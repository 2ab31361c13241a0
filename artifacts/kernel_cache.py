"""The content-addressed kernel cache: compiled binaries keyed by everything that changes their bytes.

An entry is two files under `<root>/kernels/<key[:2]>/`: `<key>.bin` (the payload) and
`<key>.json` (`{"key", "sha256", "size", "meta"}`), written in that order, each atomically
(temp file in the same folder, fsync, `os.replace`). The JSON file is what makes an entry:
a payload without one is not an entry yet. A read checks the payload's size and sha256
against the JSON; an entry that fails is deleted and reported as a miss, so it gets rebuilt.
Two processes writing the same key both succeed: they replace a file with the same bytes.

The root (`$LLMC_CACHE_DIR`, default `~/.cache/llmc`) only says where entries live; it is in
no key and changes no bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

_KEY = re.compile(r"^[0-9a-f]{64}$")


def default_root() -> Path:
    env = os.environ.get("LLMC_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmc"


class Entry(NamedTuple):
    payload: bytes
    meta: dict[str, Any]


class KernelCache:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()

    @property
    def kernels_dir(self) -> Path:
        return self.root / "kernels"

    def _paths(self, key: str) -> tuple[Path, Path]:
        if not _KEY.match(key):
            raise ValueError(f"cache key {key!r} is not a lowercase sha256 hex digest")
        folder = self.kernels_dir / key[:2]
        return folder / f"{key}.bin", folder / f"{key}.json"

    def get(self, key: str) -> bytes | None:
        entry = self.load(key)
        return None if entry is None else entry.payload

    def load(self, key: str) -> Entry | None:
        """The entry for `key`, or None when there is none or it was damaged (then it is deleted)."""
        bin_path, json_path = self._paths(key)
        try:
            text = json_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            payload = bin_path.read_bytes()
        except (OSError, ValueError):  # a missing payload beside its JSON is damage too
            self._discard(key)
            return None
        if (
            not isinstance(record, dict)
            or record.get("key") != key
            or record.get("size") != len(payload)
            or record.get("sha256") != hashlib.sha256(payload).hexdigest()
            or not isinstance(record.get("meta"), dict)
        ):
            self._discard(key)
            return None
        return Entry(payload, record["meta"])

    def put(self, key: str, payload: bytes, meta: Mapping[str, Any] | None = None) -> None:
        bin_path, json_path = self._paths(key)
        record = {"key": key, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "meta": dict(meta or {})}
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), allow_nan=False) + "\n"
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(bin_path, payload)
        _write_atomic(json_path, text.encode())

    def discard(self, key: str) -> None:
        self._discard(key)

    def _discard(self, key: str) -> None:
        for path in self._paths(key)[::-1]:  # the JSON first: without it the entry is gone
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def info(self) -> dict[str, Any]:
        entries = 0
        size = 0
        if self.kernels_dir.is_dir():
            for path in self.kernels_dir.glob("??/*"):
                if path.suffix == ".json" and _KEY.match(path.stem):
                    entries += 1
                try:
                    size += path.stat().st_size
                except FileNotFoundError:
                    pass
        return {"path": str(self.root), "entries": entries, "bytes": size}

    def clear(self) -> int:
        """Delete every kernel entry; returns how many there were."""
        entries = self.info()["entries"]
        shutil.rmtree(self.kernels_dir, ignore_errors=True)
        return entries


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
