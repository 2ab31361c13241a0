"""The bundle cache: finished bundles under `$LLMC_CACHE_DIR/bundles/<build key>/`.

A build whose key is here skips every stage after ingest: the entry is verified (every digest),
then hard-linked (copied where links fail) into a staging directory beside the output and
renamed into place, so a hit gives the same bytes as a full build. Entries are stored by the
same staging-and-rename, touched on every use, and evicted least recently used first once the
cache holds more than `max_bytes`. Only names llmc writes (64 hex digits, `.tmp-*` staging) are
ever deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .kernel_cache import default_root
from .manifest import MANIFEST

DEFAULT_MAX_BYTES = 64 << 30
_KEY = re.compile(r"^[0-9a-f]{64}$")
_STAGING = re.compile(r"^\.tmp-[0-9a-f]{64}-")


class BundleCache:
    def __init__(self, root: Path | str | None = None, max_bytes: int | None = None):
        self.root = (Path(root).expanduser() if root is not None else default_root()) / "bundles"
        env = os.environ.get("LLMC_BUNDLE_CACHE_BYTES")
        self.max_bytes = max_bytes if max_bytes is not None else int(env) if env and env.isdigit() else DEFAULT_MAX_BYTES

    def entry(self, key: str) -> Path:
        if not _KEY.match(key):
            raise ValueError(f"bundle cache key {key!r} is not a lowercase sha256 hex digest")
        return self.root / key

    def materialize(self, key: str, out: Path) -> dict | None:
        """Put the cached bundle for `key` at `out`; its manifest, or None on a miss (a bad entry is dropped)."""
        from .reader import verify_bundle
        from .writer import place_bundle, staging_dir

        entry = self.entry(key)
        if not (entry / MANIFEST).is_file():
            return None
        try:
            report = verify_bundle(entry)
        except Exception:  # an entry that does not even parse: rebuild it
            report = None
        if report is None or not report.ok or report.manifest.get("build_key") != key:
            shutil.rmtree(entry, ignore_errors=True)
            return None
        staging = staging_dir(out)
        try:
            _link_tree(entry, staging)
            place_bundle(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        os.utime(entry)
        return report.manifest

    def store(self, key: str, bundle: Path) -> bool:
        """Add a freshly written bundle; False when the cache cannot be written (the build still stands)."""
        entry = self.entry(key)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if entry.exists():
                os.utime(entry)
                return True
            staging = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.root))
            try:
                _link_tree(bundle, staging)
                os.rename(staging, entry)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                if entry.is_dir():  # another build stored the same key meanwhile
                    return True
                raise
            self.evict()
        except OSError:
            return False
        return True

    def evict(self) -> list[str]:
        """Drop least recently used entries until the cache fits `max_bytes`; the keys dropped."""
        entries = sorted(self._entries(), key=lambda e: (e[1], e[0].name))
        total = sum(size for _, _, size in entries)
        dropped = []
        for path, _, size in entries:
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size
            dropped.append(path.name)
        return dropped

    def info(self) -> dict:
        entries = list(self._entries())
        return {"path": str(self.root), "entries": len(entries), "bytes": sum(size for _, _, size in entries)}

    def clear(self) -> int:
        """Delete every entry and stale staging directory llmc wrote; anything else stays."""
        count = 0
        for path in list(self.root.iterdir()) if self.root.is_dir() else ():
            if path.is_dir() and not path.is_symlink() and (_KEY.match(path.name) or _STAGING.match(path.name)):
                shutil.rmtree(path, ignore_errors=True)
                count += bool(_KEY.match(path.name))
        try:
            self.root.rmdir()  # only when nothing else is left in it
        except OSError:
            pass
        return count

    def _entries(self):
        for path in self.root.iterdir() if self.root.is_dir() else ():
            if _KEY.match(path.name) and path.is_dir() and not path.is_symlink():
                size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
                yield path, path.stat().st_mtime, size


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of `src` under `dst` (a copy where the file system refuses links)."""
    for dirpath, _, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            try:
                os.link(Path(dirpath, name), dst / rel / name)
            except OSError:
                shutil.copyfile(Path(dirpath, name), dst / rel / name)
