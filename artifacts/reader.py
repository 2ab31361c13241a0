"""Open a bundle (a directory or an archive made by `llmc pack`), check it, read its parts.

    with Bundle.open("qwen3.llmc") as bundle:          # verify="full" hashes every file
        plan = bundle.plan("decode_b8")

`verify="fast"` checks the manifest, that no file is missing or extra, and every size;
`verify="full"` (the default) also every sha256; `verify="none"` only reads the manifest.
Every refusal is a `BundleError` of one line: the bundle, the file and field, what to do.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from llmc.errors import BundleError

from .archive import (MAX_MANIFEST, exit_cleanly_on_signals, extract, extraction_prefix,
                      remove_stale_extractions)
from .canonical import dumps, loads, sha256_file
from .manifest import (MANIFEST, check_format_version, is_int, root_digest, validate_kernel_index, validate_lock,
                       validate_manifest)
from .plan_schema import validate_plan

MALFORMED = "the bundle is malformed: rebuild it with llmc build"
KERNEL_INDEX = "kernels/index.json"
LOCK = "impls.lock.json"


@dataclass(frozen=True)
class Mismatch:
    file: str  # relative to the bundle
    kind: str  # root_digest | canonical | missing | extra | size | sha256 | unreadable
    message: str


@dataclass
class VerifyReport:
    source: Path
    manifest: dict
    full: bool  # False: sizes only (--fast)
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def format_version(self) -> int:
        return self.manifest["format_version"]

    @property
    def target(self) -> dict:
        return self.manifest["target"]

    @property
    def root_digest(self) -> str:
        return self.manifest["root_digest"]


class Bundle:
    """A bundle whose manifest has been read and validated; parts are read (and validated) on demand."""

    def __init__(self, path: Path, manifest: dict, source: Path, extracted: bool = False,
                 manifest_bytes: bytes | None = None):
        self.path = path  # the bundle directory (a temporary one for an archive)
        self.manifest = manifest
        self._manifest_bytes = dumps(manifest) if manifest_bytes is None else manifest_bytes
        self.source = source  # what the user named
        self.label = str(source)
        self._cache: dict[str, dict] = {}
        self._cleanup = weakref.finalize(self, shutil.rmtree, path, True) if extracted else None

    @classmethod
    def open(cls, path: str | os.PathLike, verify: str = "full") -> "Bundle":
        """Open a bundle directory or archive; refuse (BundleError) the first problem `verify` finds."""
        if verify not in ("full", "fast", "none"):
            raise ValueError(f"verify must be 'full', 'fast' or 'none', not {verify!r}")
        source = Path(path)
        if source.is_dir():
            root, extracted = source, False
        elif source.is_file():
            if not tarfile.is_tarfile(source):
                raise BundleError(f"{source}: is a file but not a bundle archive; pass a bundle directory "
                                  "or an archive made by llmc pack")
            exit_cleanly_on_signals()  # SIGTERM/SIGHUP run the cleanup below, not a bare exit
            remove_stale_extractions()  # those of processes that were killed (SIGKILL cannot be caught)
            root, extracted = Path(tempfile.mkdtemp(prefix=extraction_prefix())), True
            try:
                extract(source, root)
            except BaseException:
                shutil.rmtree(root, ignore_errors=True)
                raise
        else:
            raise BundleError(f"{source}: no such bundle; pass the directory written by llmc build "
                              "or an archive made by llmc pack")
        try:
            manifest, data = _load_manifest(root, str(source))
            bundle = cls(root, manifest, source, extracted, data)
        except BaseException:
            if extracted:
                shutil.rmtree(root, ignore_errors=True)
            raise
        if verify != "none":
            try:
                first = next(bundle._mismatches(full=verify == "full"), None)
                if first is not None:
                    raise BundleError(f"{bundle.label}: {first.message}")
                bundle.validate()
            except BaseException:
                bundle.close()
                raise
        return bundle

    def validate(self) -> None:
        """Check that the plans can run: against the manifest, the kernel index and the weights' headers.

        Cheap (headers and JSON only), and done before anything is allocated; a BundleError names
        the file and field. `open` calls it unless verify="none".
        """
        from .validate import validate_bundle

        validate_bundle(self)

    # ---- parts ---------------------------------------------------------------------------------

    def file(self, rel: str) -> Path:
        """The path of a file the manifest lists."""
        if rel not in self.manifest["files"]:
            raise BundleError(f"{self.label}: has no file {rel}; {MALFORMED}")
        path = self.path / rel
        if not path.is_file():
            raise BundleError(f"{self.label}: {rel} is listed in the manifest but missing; "
                              "the bundle is incomplete: rebuild it or copy it again")
        return path

    def read_json(self, rel: str) -> object:
        return loads(_read(self.file(rel), f"{self.label}: {rel}"), f"{self.label}: {rel}", BundleError, MALFORMED)

    def plans(self) -> list[str]:
        """Plan names (decode_b8, prefill_t64, ...), sorted."""
        prefix, suffix = "plans/", ".json"
        return sorted(n[len(prefix):-len(suffix)] for n in self.manifest["files"]
                      if n.startswith(prefix) and n.endswith(suffix) and "/" not in n[len(prefix):-len(suffix)]
                      and len(n) > len(prefix) + len(suffix))

    def plan(self, name: str) -> dict:
        if name not in self.plans():
            raise BundleError(f"{self.label}: has no plan {name!r}; it has {', '.join(self.plans()) or 'none'}")
        plan = self._validated(f"plans/{name}.json", lambda obj: validate_plan(obj, name))
        kernels = self.kernel_index()["kernels"]
        for i, step in enumerate(plan["steps"]):
            for k, launch in enumerate(step.get("launches", [])):
                if launch["kernel"] not in kernels:
                    raise BundleError(f"{self.label}: plans/{name}.json: field 'steps[{i}].launches[{k}].kernel' "
                                      f"names a kernel that {KERNEL_INDEX} lacks; {MALFORMED}")
        return plan

    def lock(self) -> dict:
        return self._validated(LOCK, validate_lock)

    def kernel_index(self) -> dict:
        """kernels/index.json, or an empty index for a bundle without kernels (the cpu target)."""
        if KERNEL_INDEX not in self.manifest["files"]:
            return {"kernels": {}}
        index = self._validated(KERNEL_INDEX, validate_kernel_index)
        for kid, entry in index["kernels"].items():
            if entry["file"] not in self.manifest["files"]:
                raise BundleError(f"{self.label}: {KERNEL_INDEX}: field 'kernels[{kid!r}].file' names "
                                  f"{entry['file']}, which the manifest does not list; {MALFORMED}")
        return index

    def _validated(self, rel: str, validate) -> dict:
        if rel not in self._cache:
            obj = self.read_json(rel)
            try:
                self._cache[rel] = validate(obj)
            except BundleError as e:
                raise BundleError(f"{self.label}: {e}; {MALFORMED}") from None
        return self._cache[rel]

    # ---- verification --------------------------------------------------------------------------

    def check(self, full: bool = True) -> VerifyReport:
        """Every mismatch between the files and the manifest (for `llmc verify`)."""
        return VerifyReport(self.source, self.manifest, full, list(self._mismatches(full)))

    def _mismatches(self, full: bool) -> Iterator[Mismatch]:
        files = self.manifest["files"]
        if root_digest(self.manifest) != self.manifest["root_digest"]:
            yield Mismatch(MANIFEST, "root_digest", "manifest.json: root_digest does not match the manifest; "
                           "the manifest was edited: rebuild the bundle")
        elif self._manifest_bytes != dumps(self.manifest):
            yield Mismatch(MANIFEST, "canonical", "manifest.json: is not canonical JSON (sorted keys, no spaces); "
                           "the manifest was edited: rebuild the bundle")
        sizes = self._files_on_disk()
        for name in sorted(files.keys() - sizes.keys()):
            yield Mismatch(name, "missing", f"{name}: listed in the manifest but missing; "
                           "the bundle is incomplete: rebuild it or copy it again")
        for name in sorted(sizes.keys() - files.keys()):
            yield Mismatch(name, "extra", f"{name}: not listed in the manifest; something was added to the "
                           "bundle: remove the file or rebuild the bundle")
        common = sorted(files.keys() & sizes.keys())
        for name in common:
            if sizes[name] != files[name]["size"]:
                yield Mismatch(name, "size", f"{name}: {sizes[name]} bytes, the manifest says {files[name]['size']}; "
                               "the bundle was modified or truncated: rebuild it or copy it again")
        for name in common if full else ():
            if sizes[name] != files[name]["size"]:
                continue
            try:
                digest = sha256_file(self.path / name)
            except OSError as e:
                yield Mismatch(name, "unreadable", f"{name}: cannot be read ({e.strerror}); fix its permissions "
                               "or copy the bundle again")
                continue
            if digest != files[name]["sha256"]:
                yield Mismatch(name, "sha256", f"{name}: sha256 does not match the manifest; the bundle was "
                               "modified or corrupted: rebuild it or copy it again")

    def _files_on_disk(self) -> dict[str, int]:
        """Regular files under the bundle (symlinks followed), except manifest.json -> size."""
        sizes = {}
        for dirpath, _, filenames in os.walk(self.path):
            for fname in filenames:
                path = Path(dirpath, fname)
                try:
                    st = path.stat()
                except OSError:
                    continue
                rel = path.relative_to(self.path).as_posix()
                if stat.S_ISREG(st.st_mode) and rel != MANIFEST:
                    sizes[rel] = st.st_size
        return sizes

    # ---- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove the extraction directory of an archive (a no-op for a directory bundle)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _load_manifest(root: Path, label: str) -> tuple[dict, bytes]:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(f"{label}: not an llmc bundle (manifest.json is missing); pass the directory "
                          "written by llmc build or an archive made by llmc pack")
    if path.stat().st_size > MAX_MANIFEST:
        raise BundleError(f"{label}: manifest.json is over {MAX_MANIFEST} bytes; {MALFORMED}")
    data = _read(path, f"{label}: {MANIFEST}")
    obj = loads(data, f"{label}: {MANIFEST}", BundleError, MALFORMED)
    if isinstance(obj, dict) and is_int(obj.get("format_version")):
        try:  # a version this llmc cannot read: the message says what to do
            check_format_version(obj)
        except BundleError as e:
            raise BundleError(f"{label}: {e}") from None
    try:
        return validate_manifest(obj), data
    except BundleError as e:
        raise BundleError(f"{label}: {e}; {MALFORMED}") from None


def _read(path: Path, name: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"{name}: cannot be read ({e.strerror}); check the bundle's permissions") from None


def verify_bundle(path: str | os.PathLike, full: bool = True) -> VerifyReport:
    """Collect every mismatch of a bundle (directory or archive); a bad manifest raises BundleError."""
    with Bundle.open(path, verify="none") as bundle:
        return bundle.check(full)
