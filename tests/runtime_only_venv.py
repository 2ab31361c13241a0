"""A venv holding exactly what a fleet installs (`pip install '.[cuda,serve]'`): llmc and its runtime
dependencies, and nothing else — no torch, triton or transformers.

Built offline from this environment's installed distributions: each distribution that llmc's
requirements (base plus the chosen extras) reach is linked into the new venv's site-packages by
its top-level files, so what imports there is what the dependency metadata declares.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
import sysconfig
import venv
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def _closure(root: str, extras: tuple[str, ...]) -> set[str]:
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, active = todo.pop()
        key = canonicalize_name(name)
        if (key, active) in seen:
            continue
        seen.add((key, active))
        for text in md.requires(name) or ():
            req = Requirement(text)
            environments = [{"extra": e} for e in active] or [{"extra": ""}]
            if req.marker is None or any(req.marker.evaluate(env) for env in environments):
                todo.append((req.name, tuple(sorted(req.extras))))
    return {key for key, _ in seen}


def _top_level(dist: md.Distribution) -> set[str]:
    tops = set()
    for f in dist.files or ():
        first = f.parts[0]
        if first.endswith(".dist-info") or first == ".." or first.endswith(".data") or first == "__pycache__":
            if first.endswith(".dist-info"):
                tops.add(first)
            continue
        tops.add(first)
    return tops


def make_runtime_venv(where: Path, extras: tuple[str, ...] = ("cuda", "serve")) -> Path:
    """Returns the venv's python."""
    venv.create(where, with_pip=False, symlinks=True)
    site = where / Path(sysconfig.get_path("purelib")).relative_to(sysconfig.get_path("data"))
    wanted = _closure("llmc", extras)
    for dist in md.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in wanted:
            continue
        base = Path(dist.locate_file(""))
        for top in _top_level(dist):
            src, dst = base / top, site / top
            if src.exists() and not dst.exists():
                os.symlink(src, dst)
    return where / "bin" / Path(sys.executable).name


FORBIDDEN = ("torch", "triton", "transformers")
