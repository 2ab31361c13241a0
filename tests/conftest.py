"""Shared test setup.

The repository root holds folders named `kernels`, `runtime`, `cli`: if the root is on sys.path
(as `python -m pytest` puts it), they shadow real packages (transformers imports one called
`kernels`). llmc's own code is imported as `llmc.*` only, so drop the root from the path.
"""

import os
import sys
from pathlib import Path

import pytest


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


HAS_GPU = _has_gpu()
if not HAS_GPU:
    # Without a GPU, kernels can only run through Triton's interpreter; `@triton.jit` reads this
    # when it decorates, so it must be set before anything imports llmc.kernels. Builds still
    # compile real cubins (llmc.aot.compile unwraps interpreted kernels).
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: checkpoints, ...


def pytest_collection_modifyitems(config, items):
    if not HAS_GPU:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (run on the lent machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
