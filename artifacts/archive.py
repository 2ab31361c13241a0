"""Read a bundle archive made by `llmc pack`: the manifest first, then only the files it lists.

A plain (uncompressed) tar whose members are the bundle's files and their folders. Before one
byte is written: every member is a safe relative name of a regular file or a folder (no links,
devices, sparse files, duplicates), manifest.json is read from the archive and validated, and the
members are exactly the files the manifest lists, each of the size it lists. The data written is
then at most the archive's own size, and exactly what the manifest declares.
"""

from __future__ import annotations

import os
import shutil
import signal
import tarfile
import tempfile
import threading
from pathlib import Path

from llmc.errors import BundleError

from .canonical import loads
from .manifest import MANIFEST, check_format_version, is_int, is_safe_relpath, validate_manifest

MAX_MANIFEST = 64 << 20  # bytes; a manifest lists files, it is never this large
MAX_MEMBERS = 100_000  # a bundle has tens to thousands of files
_CHUNK = 1 << 20
_REPACK = "repack the bundle with llmc pack"
_MALFORMED = "the bundle is malformed: rebuild it with llmc build"


def extract(tar_path: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Extract the bundle archive `tar_path` into the existing empty directory `dest`; return its manifest.

    Every refusal is a BundleError of one line naming the archive and the member.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    label = tar_path.name
    try:
        with open(tar_path, "rb") as raw:
            _refuse_compressed(raw.read(6), label)
            raw.seek(0)
            archive_size = os.fstat(raw.fileno()).st_size
            with tarfile.open(fileobj=raw, mode="r:") as tar:
                files, _ = check_members(tar, label)
                manifest_bytes, manifest = _read_manifest(tar, files, label)
                _check_against_manifest(files, manifest, archive_size, label)
                _check_space(dest, manifest, label)
                for name, entry in sorted(manifest["files"].items()):
                    _copy_member(tar, files[name], dest / name, entry["size"], label)
        _write_new(dest / MANIFEST, manifest_bytes)
    except (tarfile.TarError, EOFError, OSError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise BundleError(f"{label}: not a readable bundle archive ({detail}); copy it again or {_REPACK}") from None
    return manifest


def _refuse_compressed(head: bytes, label: str) -> None:
    for magic, kind in ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd")):
        if head.startswith(magic):
            raise BundleError(f"{label}: is a {kind}-compressed archive; llmc reads plain tar archives only: "
                              f"decompress it first, or {_REPACK}")


def check_members(tar: tarfile.TarFile, label: str) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
    """Every member, read lazily; refuse anything that is not a plain file or folder with a safe name."""
    files: dict[str, tarfile.TarInfo] = {}
    dirs: set[str] = set()
    count = 0
    while (member := tar.next()) is not None:
        count += 1
        if count > MAX_MEMBERS:
            raise BundleError(f"{label}: holds more than {MAX_MEMBERS} members; it is not a bundle archive")
        raw = member.name
        name = raw[2:] if raw.startswith("./") else raw
        name = name.rstrip("/") if member.isdir() else name
        if member.isdir() and name in ("", "."):
            continue
        if raw.startswith("/") or ".." in raw.split("/"):
            raise BundleError(f"{label}: member {raw!r} would be written outside the extraction directory; {_REPACK}")
        if not is_safe_relpath(name):
            raise BundleError(f"{label}: member {raw!r} has an invalid name; {_REPACK}")
        if member.issym() or member.islnk():
            kind = "a symbolic link" if member.issym() else "a hard link"
            raise BundleError(f"{label}: member {raw!r} is {kind}; bundle archives hold only files and directories")
        if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise BundleError(f"{label}: member {raw!r} is a special file (type {member.type!r}); "
                              "bundle archives hold only files and directories")
        if getattr(member, "sparse", None) is not None or any(k.startswith("GNU.sparse") for k in member.pax_headers):
            raise BundleError(f"{label}: member {raw!r} is a sparse file; bundle archives hold only plain files: "
                              f"{_REPACK}")
        if name in files or name in dirs:
            raise BundleError(f"{label}: member {name!r} appears twice; {_REPACK}")
        if member.isdir():
            dirs.add(name)
        else:
            files[name] = member
    for name in files:
        parts = name.split("/")[:-1]
        for i in range(len(parts)):
            parent = "/".join(parts[: i + 1])
            if parent in files:
                raise BundleError(f"{label}: member {parent!r} is a file but {name!r} needs it to be a directory; "
                                  f"{_REPACK}")
    return files, dirs


def _read_manifest(tar: tarfile.TarFile, files: dict, label: str) -> tuple[bytes, dict]:
    member = files.get(MANIFEST)
    if member is None:
        raise BundleError(f"{label}: not an llmc bundle archive (it has no manifest.json); {_REPACK}")
    if member.size > MAX_MANIFEST:
        raise BundleError(f"{label}: manifest.json is {member.size} bytes, over the {MAX_MANIFEST} byte limit; "
                          f"{_MALFORMED}")
    data = tar.extractfile(member).read(member.size)
    if len(data) != member.size:
        raise BundleError(f"{label}: member 'manifest.json' is truncated; the archive is damaged: copy it again")
    where = f"{label}: {MANIFEST}"
    obj = loads(data, where, BundleError, _MALFORMED)
    if isinstance(obj, dict) and is_int(obj.get("format_version")):
        try:
            check_format_version(obj)
        except BundleError as e:
            raise BundleError(f"{label}: {e}") from None
    try:
        return data, validate_manifest(obj)
    except BundleError as e:
        raise BundleError(f"{label}: {e}; {_MALFORMED}") from None


def _check_against_manifest(files: dict, manifest: dict, archive_size: int, label: str) -> None:
    listed = manifest["files"]
    for name in sorted(files.keys() - listed.keys() - {MANIFEST}):
        raise BundleError(f"{label}: member {name!r} is not listed in the manifest; {_REPACK}")
    for name in sorted(listed.keys() - files.keys()):
        raise BundleError(f"{label}: {name} is listed in the manifest but not in the archive; the archive is "
                          f"incomplete: copy it again or {_REPACK}")
    for name, entry in sorted(listed.items()):
        if files[name].size != entry["size"]:
            raise BundleError(f"{label}: member {name!r} is {files[name].size} bytes, the manifest says "
                              f"{entry['size']}; copy the archive again or {_REPACK}")
    total = sum(entry["size"] for entry in listed.values())
    if total > archive_size:
        raise BundleError(f"{label}: the manifest lists {total} bytes of files but the archive is {archive_size} "
                          f"bytes; the archive is damaged: copy it again or {_REPACK}")


def _check_space(dest: Path, manifest: dict, label: str) -> None:
    need = sum(entry["size"] for entry in manifest["files"].values())
    free = shutil.disk_usage(dest).free
    if need > free:
        raise BundleError(f"{label}: extracting needs {need} bytes; {dest.parent} has {free} free: free space "
                          "or set TMPDIR to a larger disk")


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path, size: int, label: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = tar.extractfile(member)
    left = size
    with _open_new(target) as f:
        while left:
            chunk = src.read(min(_CHUNK, left))
            if not chunk:
                raise BundleError(f"{label}: member {member.name!r} is truncated; the archive is damaged: copy it again")
            f.write(chunk)
            left -= len(chunk)


def _open_new(path: Path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    return os.fdopen(fd, "wb")


def _write_new(path: Path, data: bytes) -> None:
    with _open_new(path) as f:
        f.write(data)


# ---- cleaning up extraction directories: on SIGTERM / SIGHUP, and after SIGKILL --------------

EXTRACTION_PREFIX = "llmc-bundle-"


def extraction_prefix() -> str:
    """`llmc-bundle-<pid>-`: the process that owns an extraction directory is in its name."""
    return f"{EXTRACTION_PREFIX}{os.getpid()}-"


def remove_stale_extractions(folder: str | os.PathLike | None = None) -> list[Path]:
    """Remove extraction directories (ours by name and owner) whose process no longer runs."""
    removed = []
    folder = Path(folder or tempfile.gettempdir())
    try:
        entries = list(folder.glob(f"{EXTRACTION_PREFIX}*-*"))
    except OSError:
        return removed
    for path in entries:
        pid = path.name[len(EXTRACTION_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.is_symlink() or path.lstat().st_uid != os.getuid() or _alive(int(pid)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


_handlers_lock = threading.Lock()


def exit_cleanly_on_signals() -> None:
    """Turn SIGTERM and SIGHUP, while they would kill the process outright, into SystemExit.

    Python's default action for them ends the process without running `finally` blocks or exit
    handlers, which would leave an extracted bundle in $TMPDIR. Handlers someone else installed
    (the server's graceful shutdown) are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    with _handlers_lock:
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
                signal.signal(signum, _raise_exit)


def _raise_exit(signum, frame) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second signal kills at once
    raise SystemExit(128 + signum)
