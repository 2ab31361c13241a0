"""Write a bundle atomically: stage into `<out>.tmp-<random>`, then rename into place.

    check_output_path(out)            # first thing a build does, before any work
    with BundleWriter(out) as w:
        w.write_bytes("weights/model.safetensors", safetensors.torch.save(tensors))
        w.write_json("plans/decode_b1.json", plan)
        manifest = w.commit({"llmc_version": ..., "target": ..., ...})

If anything fails before `commit()` returns, the staging directory is removed and nothing is
written at the output path (an old bundle there stays as it was).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError, UserError

from .canonical import dumps, sha256_file
from .manifest import FORMAT_VERSION, MANIFEST, is_int, is_safe_relpath, root_digest, validate_manifest


def is_bundle_dir(path: str | os.PathLike) -> bool:
    """A directory whose manifest.json parses and has an integer format_version."""
    manifest = Path(path) / MANIFEST
    try:
        version = json.loads(manifest.read_bytes()).get("format_version")
    except (OSError, ValueError, AttributeError, RecursionError):
        return False
    return is_int(version)


def check_output_path(out: str | os.PathLike) -> Path:
    """Refuse an output path that exists and is neither an llmc bundle nor an empty directory."""
    out = Path(out)
    if out.is_dir():
        if is_bundle_dir(out) or not any(out.iterdir()):
            return out
        raise UserError(f"{out}: exists and is not an llmc bundle (no valid manifest.json); "
                        "choose another output path or remove it")
    if out.exists() or out.is_symlink():
        raise UserError(f"{out}: exists and is not a directory; choose another output path or remove it")
    return out


class BundleWriter:
    def __init__(self, out_dir: str | os.PathLike):
        self.out = check_output_path(out_dir)
        parent = self.out.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=f"{self.out.name}.tmp-", dir=parent))
        except OSError as e:
            raise UserError(f"{self.out}: cannot write there ({e.strerror}); choose another output path") from None
        self._written: set[str] = set()
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

    # ---- finishing ----------------------------------------------------------------------------

    def commit(self, manifest_fields: dict) -> dict:
        """Digest every staged file, write manifest.json, move the bundle into place; return the manifest."""
        try:
            files = {}
            for rel in self._staged_files():
                path = self.staging / rel
                files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
            manifest = {"format_version": FORMAT_VERSION, **manifest_fields, "files": files,
                        "root_digest": root_digest(files)}
            validate_manifest(manifest)
            (self.staging / MANIFEST).write_bytes(dumps(manifest))
            self.staging.chmod(0o755)
            check_output_path(self.out)  # nothing else appeared there meanwhile
            self._move_into_place()
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

    def _move_into_place(self) -> None:
        if not self.out.exists():
            os.rename(self.staging, self.out)
            return
        old = self.out.with_name(f"{self.out.name}.old-{uuid.uuid4().hex[:12]}")
        os.rename(self.out, old)
        try:
            os.rename(self.staging, self.out)
        except BaseException:
            os.rename(old, self.out)
            raise
        shutil.rmtree(old, ignore_errors=True)
