"""The cuda backend: the shared GPU backend (gpu.py) over cuda-python's driver API only."""

from __future__ import annotations

from .cuda_driver import Driver, query_device
from .gpu import KV_RESERVE, GpuBackend, PlanState, as_bundle, checked_driver  # noqa: F401  (re-exported)


class CudaBackend(GpuBackend):
    name = "cuda"
    driver_class = Driver
    query_device = staticmethod(query_device)


check_device = CudaBackend.check_device
