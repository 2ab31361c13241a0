"""Thin checked wrappers over cuda-python's driver API (`cuda.bindings.driver`).

Every call goes through `Driver.call(name, *args)`, which raises `CudaError` naming the
function and the error (`cuLaunchKernel: CUDA_ERROR_INVALID_VALUE (invalid argument)`) and
returns the call's values without the status. Tests pass a fake module with the same names.
Nothing here imports torch or triton.
"""

from __future__ import annotations

from llmc.runtime.compat import DeviceInfo

from .driver import CheckedCalls, DriverError, host_array  # noqa: F401  (host_array: re-exported)


class CudaError(DriverError):
    """A CUDA driver call failed."""


def import_driver():
    """cuda-python's driver module; a clear error when cuda-python is not installed."""
    try:
        from cuda.bindings import driver
    except ImportError as e:  # cuda-python < 12.6 spelled it `from cuda import cuda`
        try:
            from cuda import cuda as driver  # type: ignore[no-redef]
        except ImportError:
            raise CudaError(f"cuda-python is not installed ({e}): pip install 'llmc[cuda]' to run on an NVIDIA GPU, "
                            "or use --device cpu with a cpu bundle") from None
    return driver


class Driver(CheckedCalls):
    """The driver layer (driver.py) over cuda-python."""

    name, vendor = "cuda", "NVIDIA"
    error_type = CudaError
    launch_func = "cuLaunchKernel"
    bad_image_codes = ("NO_BINARY_FOR_GPU", "INVALID_IMAGE", "UNSUPPORTED_PTX")
    CALLS = {"retain_context": "cuDevicePrimaryCtxRetain", "set_current": "cuCtxSetCurrent",
             "release_context": "cuDevicePrimaryCtxRelease", "mem_info": "cuMemGetInfo", "alloc": "cuMemAlloc",
             "free": "cuMemFree", "alloc_host": "cuMemHostAlloc", "free_host": "cuMemFreeHost",
             "memset_d8": "cuMemsetD8Async", "copy_htod": "cuMemcpyHtoDAsync", "copy_dtoh": "cuMemcpyDtoHAsync",
             "copy_dtod": "cuMemcpyDtoDAsync", "stream_destroy": "cuStreamDestroy", "sync": "cuStreamSynchronize",
             "event_record": "cuEventRecord", "event_sync": "cuEventSynchronize", "event_destroy": "cuEventDestroy",
             "elapsed_ms": "cuEventElapsedTime", "load_module": "cuModuleLoadData",
             "module_unload": "cuModuleUnload", "get_function": "cuModuleGetFunction",
             "end_capture": "cuStreamEndCapture", "graph_upload": "cuGraphUpload", "graph_launch": "cuGraphLaunch",
             "graph_destroy": "cuGraphDestroy", "graph_exec_destroy": "cuGraphExecDestroy"}

    def __init__(self, module=None):
        self.mod = import_driver() if module is None else module
        self.success = self.mod.CUresult.CUDA_SUCCESS

    def error_name(self, err) -> str:
        name = getattr(err, "name", None)
        if name is None:
            try:
                status, raw = self.mod.cuGetErrorName(err)
                name = raw.decode() if status == self.success and raw else f"CUresult {int(err)}"
            except Exception:  # the library itself may be missing
                name = f"CUresult {err}"
        try:
            status, raw = self.mod.cuGetErrorString(err)
            if status == self.success and raw:
                return f"{name} ({raw.decode()})"
        except Exception:
            pass
        return name

    def call(self, name: str, *args):
        result = getattr(self.mod, name)(*args)
        err = result[0]
        if err != self.success:
            text = self.error_name(err)
            raise CudaError(f"{name}: {text}", name, getattr(err, "name", str(err)))
        if len(result) == 1:
            return None
        return result[1] if len(result) == 2 else result[1:]

    # ---- enums, spelled once ---------------------------------------------------------------

    def device_attr(self, attr: str):
        return getattr(self.mod.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{attr}")

    def func_attr(self, attr: str):
        return getattr(self.mod.CUfunction_attribute, f"CU_FUNC_ATTRIBUTE_{attr}")

    # ---- device ----------------------------------------------------------------------------

    def init(self) -> None:
        self.call("cuInit", 0)

    def device_info(self, ordinal: int = 0) -> tuple[object, DeviceInfo]:
        """The CUdevice handle and what compat needs to know about it (free memory is left at the
        total: it needs a context; ask `mem_info` once one is current)."""
        count = self.call("cuDeviceGetCount")
        if ordinal >= count:
            raise CudaError(f"cuDeviceGet: GPU {ordinal} requested; this machine has {count}", "cuDeviceGet")
        dev = self.call("cuDeviceGet", ordinal)
        name = self.call("cuDeviceGetName", 256, dev)
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace").strip()
        major = self.call("cuDeviceGetAttribute", self.device_attr("COMPUTE_CAPABILITY_MAJOR"), dev)
        minor = self.call("cuDeviceGetAttribute", self.device_attr("COMPUTE_CAPABILITY_MINOR"), dev)
        total = int(self.call("cuDeviceTotalMem", dev))
        return dev, DeviceInfo(name=name, major=int(major), minor=int(minor), total_memory=total,
                               free_memory=total, ordinal=ordinal)

    def device_attribute(self, attr: str, dev) -> int:
        return int(self.call("cuDeviceGetAttribute", self.device_attr(attr), dev))

    # ---- streams, events -------------------------------------------------------------------

    def stream_create(self):
        return self.call("cuStreamCreate", int(self.mod.CUstream_flags.CU_STREAM_NON_BLOCKING))

    def event_create(self, timing: bool = True):
        flags = self.mod.CUevent_flags.CU_EVENT_DEFAULT if timing else self.mod.CUevent_flags.CU_EVENT_DISABLE_TIMING
        return self.call("cuEventCreate", int(flags))

    # ---- modules, launches, graphs ---------------------------------------------------------

    def func_attribute(self, attr: str, func) -> int:
        return int(self.call("cuFuncGetAttribute", self.func_attr(attr), func))

    def func_set_max_dynamic_shared(self, func, nbytes: int) -> None:
        self.call("cuFuncSetAttribute", func, self.func_attr("MAX_DYNAMIC_SHARED_SIZE_BYTES"), nbytes)

    def launch(self, func, grid: tuple[int, int, int], block_x: int, shared: int, stream, params_addr: int) -> None:
        self.call("cuLaunchKernel", func, grid[0], grid[1], grid[2], block_x, 1, 1, shared, stream, params_addr, 0)

    def begin_capture(self, stream) -> None:
        mode = self.mod.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        self.call("cuStreamBeginCapture", stream, mode)

    def instantiate(self, graph):
        return self.call("cuGraphInstantiate", graph, 0)

def query_device(driver: Driver | None = None, ordinal: int = 0) -> tuple[DeviceInfo | None, str]:
    """(DeviceInfo, "") for GPU `ordinal`, or (None, why) when there is no usable driver or GPU.

    Used before anything is loaded, so a missing driver becomes compat's one clear sentence.
    """
    try:
        drv = driver or Driver()
        drv.init()
        _, info = drv.device_info(ordinal)
        return info, ""
    except CudaError as e:
        return None, str(e).split(" (", 1)[0]
    except Exception as e:  # cuda-python raises its own error when libcuda.so is not there at all
        if "DynamicLib" in type(e).__name__ or isinstance(e, OSError):
            return None, "cuInit: libcuda.so could not be loaded"
        return None, f"cuInit: {type(e).__name__}: {e}".split("\n", 1)[0]
