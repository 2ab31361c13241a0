"""One-file shipping: a deterministic tar of a bundle (read back by archive.py).

The archive holds the bundle's files at its top level (no leading directory), in sorted order,
each with mtime 0, uid/gid 0, no user/group names, mode 0644 (directories 0755), GNU format
without extended attributes: the same bundle always packs to the same bytes.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
from pathlib import Path

from llmc.errors import UserError

from .manifest import MANIFEST
from .reader import Bundle


def pack(bundle_dir: str | os.PathLike, out_file: str | os.PathLike, verify: str = "full") -> Path:
    """Write `bundle_dir` (verified first) as a deterministic tar at `out_file`; return its path.

    An existing `out_file` is never replaced: llmc cannot tell a user's file from an old archive.
    """
    out = Path(out_file)
    if out.is_dir():
        raise UserError(f"{out}: is a directory; pass a file name to -o (e.g. model.llmc.tar)")
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: already exists; remove it or choose another output file")
    with Bundle.open(bundle_dir, verify=verify) as bundle:
        root = bundle.path.resolve()
        if root in out.absolute().resolve().parents:
            raise UserError(f"{out}: is inside the bundle being packed; write the archive elsewhere")
        names = sorted({MANIFEST, *bundle.manifest["files"]})
        dirs = sorted(_ancestors(names))
        try:
            out.absolute().parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=out.absolute().parent)
        except OSError as e:
            raise UserError(f"{out}: cannot write there ({e.strerror}); choose another output path") from None
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for name in sorted(dirs + names):
                    if name in dirs:
                        tar.addfile(_info(name, tarfile.DIRTYPE, 0, 0o755))
                    else:
                        with open(root / name, "rb") as f:
                            tar.addfile(_info(name, tarfile.REGTYPE, os.fstat(f.fileno()).st_size, 0o644), f)
            os.chmod(tmp, 0o644)
            _link_new(tmp, out)
        except OSError as e:
            Path(tmp).unlink(missing_ok=True)
            raise UserError(f"{out}: cannot write there ({e.strerror}); choose another output path") from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return out


def _link_new(tmp: str, out: Path) -> None:
    """Move `tmp` to `out` unless `out` appeared meanwhile (link fails on an existing name)."""
    try:
        os.link(tmp, out)
    except FileExistsError:
        raise UserError(f"{out}: already exists; remove it or choose another output file") from None
    except OSError:  # a file system without hard links
        if out.exists() or out.is_symlink():
            raise UserError(f"{out}: already exists; remove it or choose another output file") from None
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


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
