"""Shared test setup.

The repository root holds folders named `kernels`, `runtime`, `cli`: if the root is on sys.path
(as `python -m pytest` puts it), they shadow real packages (transformers imports one called
`kernels`). llmc's own code is imported as `llmc.*` only, so drop the root from the path.
"""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ helpers: checkpoints, ...


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (run on the lent machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
