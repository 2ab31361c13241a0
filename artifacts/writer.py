"""Write a bundle atomically: stage into `<out>.tmp-<pid>-<random>`, then rename into place.

    check_output_path(out)            # first thing a build does, before any work
    with BundleWriter(out) as w:
        w.write_safetensors("weights/model.safetensors", entries)   # streamed, digested as written
        w.write_json("plans/decode_b1.json", plan)
        manifest = w.commit({"llmc_version": ..., "target": ..., ...})

If anything fails before `commit()` returns, the staging directory is removed and nothing is
written at the output path (an old bundle there stays as it was). A staging directory left by a
killed build is removed by the next build to the same path. An existing output is replaced only
when it is a bundle llmc wrote, unmodified (its manifest verifies and lists exactly its files).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError, UserError

from . import safetensors_stream
from .archive import _alive
from .canonical import dumps, sha256_file
from .manifest import FORMAT_VERSION, MANIFEST, is_safe_relpath, root_digest, validate_manifest


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """A directory llmc provably wrote: its manifest verifies and lists exactly the files it holds."""
    from .reader import verify_bundle

    if not (Path(path) / MANIFEST).is_file():
        return False
    try:
        report = verify_bundle(path)
    except Exception:  # a manifest that does not even parse is not ours to replace
        return False
    return report.ok and _only_files(Path(path))


def _only_files(path: Path) -> bool:
    """No symlinks, no empty folders: nothing the manifest's file list cannot account for."""
    for dirpath, dirnames, filenames in os.walk(path):
        if not dirnames and not filenames:
            return False
        if any(Path(dirpath, n).is_symlink() for n in dirnames + filenames):
            return False
    return True


def check_output_path(out: str | os.PathLike) -> Path:
    """Refuse an output path that exists and is neither an llmc bundle nor an empty directory."""
    out = Path(out)
    remove_stale_staging(out)
    if out.is_dir() and not out.is_symlink():
        if not any(out.iterdir()) or is_bundle_dir(out):
            return out
        raise UserError(f"{out}: exists and is not an llmc bundle left as built (no manifest that verifies and lists "
                        "exactly its files), so llmc will not replace it: choose another output path or remove it")
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: exists and is not a directory; choose another output path or remove it")
    return out


def staging_dir(out: Path) -> Path:
    """A fresh staging directory beside `out`, named with this process's id (see remove_stale_staging)."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{out.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as e:
        raise UserError(f"{out}: cannot write there ({e.strerror}); choose another output path") from None


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove `<out>.tmp-<pid>-*` staging directories whose build process is gone (killed mid-build)."""
    parent = out.absolute().parent
    pattern = re.compile(rf"^{re.escape(out.name)}\.tmp-(\d+)-[A-Za-z0-9_]+$")
    removed = []
    try:
        candidates = [p for p in parent.iterdir() if pattern.match(p.name)]
    except OSError:
        return removed
    for path in candidates:
        pid = int(pattern.match(path.name).group(1))
        if path.is_dir() and not path.is_symlink() and pid != os.getpid() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def place_bundle(staging: Path, out: Path) -> None:
    """Rename a complete staging directory to `out`, replacing the bundle there (checked again first)."""
    staging.chmod(0o755)
    check_output_path(out)  # nothing else appeared there meanwhile
    if not out.exists():
        os.rename(staging, out)
        return
    old = out.with_name(f"{out.name}.old-{uuid.uuid4().hex[:12]}")
    os.rename(out, old)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


class BundleWriter:
    def __init__(self, out_dir: str | os.PathLike):
        self.out = check_output_path(out_dir)
        self.staging = staging_dir(self.out)
        self._written: set[str] = set()
        self._digests: dict[str, tuple[str, int]] = {}  # relpath -> (sha256, size), for files digested as written
        self._done = False

    # ---- staging ------------------------------------------------------------------------------

    def path_for(self, relpath: str) -> Path:
        """Where to stage `relpath`, for a caller that writes the file itself (parents created)."""
        if self._done:
            raise LlmcError("BundleWriter: the bundle is already committed or aborted")
        if not is_safe_relpath(relpath) or relpath == MANIFEST:
            raise LlmcError(f"BundleWriter: {relpath!r} is not a valid bundle file name")
        if relpath in self._written:
            raise LlmcError(f"BundleWriter: {relpath} is written twice")
        self._written.add(relpath)
        path = self.staging / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_bytes(self, relpath: str, data: bytes) -> None:
        self.path_for(relpath).write_bytes(data)

    def write_json(self, relpath: str, obj: Any) -> None:
        self.write_bytes(relpath, dumps(obj))

    def copy_file(self, relpath: str, src: str | os.PathLike) -> None:
        shutil.copyfile(src, self.path_for(relpath))  # contents only: no times, no permissions

    def write_safetensors(self, relpath: str, entries: list) -> None:
        """Stream tensors (`safetensors_stream.Entry`) into one file, digesting it while it is written."""
        self._digests[relpath] = safetensors_stream.write(self.path_for(relpath), entries)

    def write_safetensors_side_by_side(self, files: dict[str, list]) -> None:
        """Stream several safetensors files at once, position by position (`safetensors_stream.write_side_by_side`)."""
        paths = [self.path_for(relpath) for relpath in files]
        self._digests.update(zip(files, safetensors_stream.write_side_by_side(paths, list(files.values()))))

    # ---- finishing ----------------------------------------------------------------------------

    def commit(self, manifest_fields: dict) -> dict:
        """Digest every staged file, write manifest.json, move the bundle into place; return the manifest."""
        try:
            files = {}
            for rel in self._staged_files():
                path = self.staging / rel
                sha, size = self._digests.get(rel, (None, None))
                if size != path.stat().st_size:
                    sha, size = sha256_file(path), path.stat().st_size
                files[rel] = {"sha256": sha, "size": size}
            manifest = {"format_version": FORMAT_VERSION, **manifest_fields, "files": files}
            manifest["root_digest"] = root_digest(manifest)
            validate_manifest(manifest)
            (self.staging / MANIFEST).write_bytes(dumps(manifest))
            place_bundle(self.staging, self.out)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return manifest

    def abort(self) -> None:
        """Remove the staging directory; the output path is left as it was."""
        self._done = True
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "BundleWriter":
        return self

    def __exit__(self, *exc) -> None:
        if not self._done:
            self.abort()

    def _staged_files(self) -> list[str]:
        found = []
        for dirpath, _, filenames in os.walk(self.staging):
            for name in filenames:
                rel = Path(dirpath, name).relative_to(self.staging).as_posix()
                if (self.staging / rel).is_symlink():
                    raise LlmcError(f"BundleWriter: {rel} is a symbolic link; bundles hold regular files only")
                found.append(rel)
        return sorted(found)
