"""The cuda backend: the shared GPU backend (gpu.py) over cuda-python's driver API only."""

from __future__ import annotations

from llmc.runtime.compat import DeviceInfo

from .cuda_driver import Driver, query_device
from .gpu import KV_RESERVE, PAD_VALUES, GpuBackend, PlanState, as_bundle, checked_driver  # noqa: F401  (re-exported)


def check_device(manifest: dict, device_index: int = 0, driver_module=None) -> tuple[Driver, DeviceInfo]:
    """Query GPU `device_index` and refuse, in one sentence, a bundle it cannot run (BundleError)."""
    return checked_driver(Driver, query_device, "cuda", manifest, device_index, driver_module)


class CudaBackend(GpuBackend):
    name = "cuda"

    @classmethod
    def check_device(cls, manifest: dict, device_index: int = 0, driver_module=None):
        return check_device(manifest, device_index, driver_module)
