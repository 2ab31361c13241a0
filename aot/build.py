"""`llmc build`: ingest -> trace -> fuse -> lower -> plan -> compile -> write.

Each stage is one call below (see `aot/stages.py`); `stop_after=STAGE` returns that stage's value
instead of writing a bundle. After ingest the build key is known: a bundle cache entry with that
key becomes the output without any later stage running (`use_cache=False` forces a full build).
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from llmc.artifacts import check_output_path
from llmc.errors import UserError

from . import stages
from .config import BuildConfig
from .plan import Bucket
from .target import get_target, load_impls

STAGES = ("ingest", "trace", "fuse", "lower", "plan", "compile", "write")


@dataclass
class BuildResult:
    out: Path
    manifest: dict = field(default_factory=dict)
    kernels_compiled: int = 0
    kernels_cached: int = 0
    plans: list[str] = field(default_factory=list)
    pass_log: list[str] = field(default_factory=list)
    from_cache: bool = False


# progress(stage) is entered around each stage; it may yield count(done, total), which the compile
# stage calls after each kernel (a counter for the user), or None.
Progress = Callable[[str], contextlib.AbstractContextManager]


def _quiet(stage: str):
    return contextlib.nullcontext()


def build(model_dir, out, config: BuildConfig, progress: Progress | None = None, stop_after: str | None = None,
          use_cache: bool = True):
    """Build a bundle at `out` and return a BuildResult, or with `stop_after`, that stage's value."""
    if stop_after is not None and stop_after not in STAGES:
        raise UserError(f"stop_after {stop_after!r} is not a stage; stages: {', '.join(STAGES)}")
    stage = progress or _quiet
    model_dir, out = Path(model_dir), check_output_path(out)
    if not model_dir.is_dir():
        raise UserError(f"{model_dir}: not a directory; give the path of a Hugging Face model directory")
    target = get_target(config.target)
    with stage("ingest"):
        value = stages.ingest_stage(model_dir, config, target)
    cache = None
    if stop_after is None and use_cache:
        from llmc.artifacts.bundle_cache import BundleCache

        cache = BundleCache()
        with stage("bundle cache"), _one_line_os_errors(out):
            manifest = cache.materialize(value.build_key, out)
        if manifest is not None:
            return BuildResult(out, manifest, plans=_plan_names(manifest), from_cache=True)
    load_impls()  # the kernel packages: not needed for ingest or a bundle cache hit
    for name, run in (("trace", stages.trace_stage), ("fuse", stages.fuse_stage), ("lower", stages.lower_stage),
                      ("plan", stages.plan_stage), ("compile", stages.compile_stage)):
        if stop_after == STAGES[STAGES.index(name) - 1]:
            return value
        with stage(name) as count, _one_line_os_errors(out):
            value = run(value, count) if name == "compile" else run(value)
    if stop_after == "compile":
        return value
    from .bundle_write import contents, write_bundle

    with stage("write"), _one_line_os_errors(out):
        manifest = write_bundle(out, contents(value))
    if stop_after == "write":
        return manifest
    if cache is not None:
        cache.store(value.planned.lowered.fused.ingested.build_key, out)
    fused = value.planned.lowered.fused
    return BuildResult(out, manifest, value.compiled, value.cached, list(value.plans), list(fused.pass_log))


@contextlib.contextmanager
def _one_line_os_errors(out: Path):
    """A full disk or a read-only folder is the user's to fix: one line naming the file, no traceback."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG):
            raise
        raise UserError(f"{e.filename or out}: {e.strerror}; free space, or choose a writable path for -o and "
                        "$LLMC_CACHE_DIR") from None


def _plan_names(manifest: dict) -> list[str]:
    return sorted(Path(f).stem for f in manifest["files"] if f.startswith("plans/"))


__all__ = ["STAGES", "BuildConfig", "BuildResult", "Bucket", "build"]
