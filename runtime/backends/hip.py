"""The hip backend: the shared GPU backend (gpu.py) over hip-python, for AMD GPUs (gfx942).

It has been tested only against a stand-in HIP runtime library under hip-python's real
bindings (tests/runtime/test_hip_backend.py), never on an AMD GPU.
"""

from __future__ import annotations

from llmc.runtime.compat import DeviceInfo

from .gpu import GpuBackend, checked_driver
from .hip_driver import HipDriver, query_device


def check_device(manifest: dict, device_index: int = 0, driver_module=None) -> tuple[HipDriver, DeviceInfo]:
    """Query AMD GPU `device_index` and refuse, in one sentence, a bundle it cannot run (BundleError)."""
    return checked_driver(HipDriver, query_device, "hip", manifest, device_index, driver_module)


class HipBackend(GpuBackend):
    name = "hip"

    @classmethod
    def check_device(cls, manifest: dict, device_index: int = 0, driver_module=None):
        return check_device(manifest, device_index, driver_module)
