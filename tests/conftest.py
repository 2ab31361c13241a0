"""Shared test setup.

The repository root holds folders named `kernels`, `runtime`, `cli`: if the root is on sys.path
(as `python -m pytest` puts it), they shadow real packages (transformers imports one called
`kernels`). llmc's own code is imported as `llmc.*` only, so drop the root from the path
(unless the root is a copy in the package layout, `llmc/runtime/...`, as tests/mutation makes).

Tests marked `gpu` need an NVIDIA GPU; without one they are deselected and counted in one line
of the summary, rather than reported one skip each. Kernel tests on the CPU run through Triton's
interpreter only inside `tests/kernels/interpreter.py`'s block, so one process runs both.
"""

import sys
from pathlib import Path


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAS_GPU = _has_gpu()
ROOT = Path(__file__).resolve().parent.parent
if (ROOT / "kernels").is_dir():
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: checkpoints, ...

_NOT_RUN: list = []


def pytest_collection_modifyitems(config, items):
    if HAS_GPU:
        return
    _NOT_RUN[:] = [item for item in items if "gpu" in item.keywords]
    if _NOT_RUN:
        items[:] = [item for item in items if "gpu" not in item.keywords]
        config.hook.pytest_deselected(items=_NOT_RUN)


def pytest_terminal_summary(terminalreporter):
    if _NOT_RUN:
        terminalreporter.write_line(f"{len(_NOT_RUN)} tests marked gpu not run: no NVIDIA GPU here (they run on the lent machine)")
