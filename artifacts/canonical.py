"""Canonical JSON and hashing: the same object always gives the same bytes and digest."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError, UserError

_CHUNK = 1 << 20


def dumps(obj: Any) -> bytes:
    """UTF-8, keys sorted, separators (",", ":"), no NaN, a trailing newline."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def loads(data: bytes, name: str, error: type[LlmcError] = UserError, hint: str = "") -> Any:
    """Parse JSON strictly: valid UTF-8, no duplicate keys, no NaN/Infinity.

    Any problem raises `error` with one line naming `name` (the file), followed by `hint`.
    """
    suffix = f"; {hint}" if hint else ""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{name}: not valid UTF-8 (byte {e.start}){suffix}") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise error(f"{name}: invalid JSON ({e.msg} at line {e.lineno} column {e.colno}){suffix}") from None
    except _Duplicate as e:
        raise error(f"{name}: invalid JSON (key {e.args[0]!r} appears twice in one object){suffix}") from None
    except (ValueError, RecursionError) as e:  # NaN/Infinity, over-long integers, absurd nesting
        detail = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise error(f"{name}: invalid JSON ({detail}){suffix}") from None


def load_file(path: str | os.PathLike, name: str | None = None, error: type[LlmcError] = UserError,
              hint: str = "") -> Any:
    """`loads` of a file's bytes; a missing or unreadable file raises `error` too."""
    path = Path(path)
    name = name or path.name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{name}: file not found{'; ' + hint if hint else ''}") from None
    except OSError as e:
        raise error(f"{name}: cannot be read ({e.strerror}){'; ' + hint if hint else ''}") from None
    return loads(data, name, error, hint)


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise _Duplicate(key)
        obj[key] = value
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
