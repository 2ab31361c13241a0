"""One-file shipping: a deterministic tar of a bundle, and its safe extraction.

The archive holds the bundle's files at its top level (no leading directory), in sorted order,
each with mtime 0, uid/gid 0, no user/group names, mode 0644 (directories 0755), GNU format
without extended attributes: the same bundle always packs to the same bytes.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from llmc.errors import BundleError, UserError

from .manifest import MANIFEST, is_safe_relpath

_CHUNK = 1 << 20
_REPACK = "repack the bundle with llmc pack"


def pack(bundle_dir: str | os.PathLike, out_file: str | os.PathLike, verify: str = "full") -> Path:
    """Write `bundle_dir` (verified first) as a deterministic tar at `out_file`; return its path."""
    from .reader import Bundle

    out = Path(out_file)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; pass a file name to -o (e.g. model.llmc.tar)")
    with Bundle.open(bundle_dir, verify=verify) as bundle:
        root = bundle.path.resolve()
        if root in out.absolute().resolve().parents:
            raise UserError(f"{out}: is inside the bundle being packed; write the archive elsewhere")
        names = sorted({MANIFEST, *bundle.manifest["files"]})
        dirs = sorted(_ancestors(names))
        try:
            out.absolute().parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{out.name}.tmp-", dir=out.absolute().parent)
        except OSError as e:
            raise UserError(f"{out}: cannot write there ({e.strerror}); choose another output path") from None
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in sorted(dirs + names):
                    if name in dirs:
                        tar.addfile(_info(name, tarfile.DIRTYPE, 0, 0o755))
                    else:
                        path = root / name
                        with open(path, "rb") as f:
                            tar.addfile(_info(name, tarfile.REGTYPE, os.fstat(f.fileno()).st_size, 0o644), f)
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


def _ancestors(names: list[str]) -> set[str]:
    result = set()
    for name in names:
        parts = name.split("/")[:-1]
        result.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return result


def _info(name: str, kind: bytes, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, mode
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def unpack(tar_path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a bundle archive into the existing directory `dest`, refusing anything unsafe.

    Refused (BundleError naming the archive and member): absolute names, '..', links, devices,
    FIFOs and other special members, duplicate names, a file where a directory is needed.
    """
    tar_path, dest = Path(tar_path), Path(dest)
    label = tar_path.name
    try:
        with tarfile.open(tar_path, mode="r:*") as tar:
            members = tar.getmembers()
            files, dirs = _check_members(members, label)
            for name in sorted(dirs):
                (dest / name).mkdir(parents=True, exist_ok=True)
            for name, member in files.items():
                target = dest / name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(src, f, _CHUNK)
                if target.stat().st_size != member.size:
                    raise BundleError(f"{label}: member {name!r} is truncated; the archive is damaged: copy it again")
    except (tarfile.TarError, EOFError, OSError) as e:
        detail = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
        raise BundleError(f"{label}: not a readable bundle archive ({detail}); copy it again or {_REPACK}") from None
    return dest


def _check_members(members: list[tarfile.TarInfo], label: str) -> tuple[dict[str, tarfile.TarInfo], set[str]]:
    files: dict[str, tarfile.TarInfo] = {}
    dirs: set[str] = set()
    for member in members:
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
        if name in files or name in dirs:
            raise BundleError(f"{label}: member {name!r} appears twice; {_REPACK}")
        if member.isdir():
            dirs.add(name)
        else:
            files[name] = member
    for name in files:
        for parent in _ancestors([name]):
            if parent in files:
                raise BundleError(f"{label}: member {parent!r} is a file but {name!r} needs it to be a directory; "
                                  f"{_REPACK}")
    return files, dirs
