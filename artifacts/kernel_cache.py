"""The content-addressed kernel cache: compiled binaries keyed by everything that changes their bytes.

An entry is two files under `<root>/kernels/<key[:2]>/`: `<key>.bin` (the payload) and
`<key>.json` (`{"key", "sha256", "size", "meta", "checksum"}`), written in that order, each atomically
(temp file in the same folder, fsync, `os.replace`). The JSON file is what makes an entry:
a payload without one is not an entry yet. `checksum` is the sha256 of the canonical JSON of the
other four fields, so the launch metadata (num_warps, shared memory, ...) is covered as well as the
payload. A read checks the payload's size and sha256 and the checksum; an entry that fails (or
predates the checksum) is deleted and reported as a miss, so it gets rebuilt.
Two processes writing the same key both succeed: they replace a file with the same bytes.

The root (`$LLMC_CACHE_DIR`, default `~/.cache/llmc`) only says where entries live; it is in
no key and changes no bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

_KEY = re.compile(r"^[0-9a-f]{64}$")
_PREFIX = re.compile(r"^[0-9a-f]{2}$")
_OURS = re.compile(r"^[0-9a-f]{64}\.(bin|json)$")
_OURS_TMP = re.compile(r"^\.[0-9a-f]{64}\.(bin|json)\.[A-Za-z0-9_]+\.tmp$")


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
            or record.get("checksum") != _checksum(record)
        ):
            self._discard(key)
            return None
        return Entry(payload, record["meta"])

    def put(self, key: str, payload: bytes, meta: Mapping[str, Any] | None = None) -> None:
        bin_path, json_path = self._paths(key)
        record = {"key": key, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "meta": dict(meta or {})}
        record["checksum"] = _checksum(record)
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
        """Delete every kernel entry (and its temp files); returns how many there were. Files and folders
        whose names llmc does not write stay, and so does any folder that still holds them."""
        entries = 0
        for folder in self.kernels_dir.glob("??") if self.kernels_dir.is_dir() else ():
            if not _PREFIX.match(folder.name) or folder.is_symlink() or not folder.is_dir():
                continue
            for path in folder.iterdir():
                if _OURS.match(path.name) and path.name.startswith(folder.name) or _OURS_TMP.match(path.name):
                    entries += path.suffix == ".json" and not path.name.startswith(".")
                    path.unlink(missing_ok=True)
            _rmdir_if_empty(folder)
        _rmdir_if_empty(self.kernels_dir)
        return entries


def _checksum(record: dict) -> str | None:
    """sha256 of the canonical JSON of an entry's key, sha256, size and meta; None if they cannot be encoded."""
    fields = {name: record.get(name) for name in ("key", "sha256", "size", "meta")}
    try:
        text = json.dumps(fields, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


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


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
