"""The hip backend: the shared GPU backend (gpu.py) over hip-python, for AMD GPUs (gfx942).

It has been tested only against a stand-in HIP runtime library under hip-python's real
bindings (tests/runtime/test_hip_backend.py), never on an AMD GPU.
"""

from __future__ import annotations

from .gpu import GpuBackend
from .hip_driver import HipDriver, query_device


class HipBackend(GpuBackend):
    name = "hip"
    driver_class = HipDriver
    query_device = staticmethod(query_device)


check_device = HipBackend.check_device
