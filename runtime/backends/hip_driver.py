"""The driver layer (driver.py) over hip-python (`hip.hip`, AMD's HIP runtime bindings).

Same methods as `cuda_driver.Driver`, each a checked call that raises `HipError` naming the
function and the error. Tests pass a stand-in libamdhip64.so under hip-python's real bindings.
"""

from __future__ import annotations

from llmc.runtime.compat import DeviceInfo

from .driver import CheckedCalls, DriverError


class HipError(DriverError):
    """A HIP runtime call failed."""


def import_hip():
    try:
        from hip import hip
    except ImportError as e:
        raise HipError(f"hip-python is not installed ({e}): pip install 'llmc[rocm]' to run on an AMD GPU, "
                       "or use --device cpu with a cpu bundle") from None
    return hip


class HipDriver(CheckedCalls):
    name, vendor = "hip", "AMD"
    error_type = HipError
    launch_func = "hipModuleLaunchKernel"
    bad_image_codes = ("hipErrorNoBinaryForGpu", "hipErrorInvalidImage", "hipErrorInvalidKernelFile")
    CALLS = {"retain_context": "hipDevicePrimaryCtxRetain", "set_current": "hipCtxSetCurrent",
             "release_context": "hipDevicePrimaryCtxRelease", "mem_info": "hipMemGetInfo", "alloc": "hipMalloc",
             "free": "hipFree", "alloc_host": "hipHostMalloc", "free_host": "hipHostFree",
             "memset_d8": "hipMemsetD8Async", "copy_htod": "hipMemcpyHtoDAsync", "copy_dtoh": "hipMemcpyDtoHAsync",
             "copy_dtod": "hipMemcpyDtoDAsync", "stream_destroy": "hipStreamDestroy", "sync": "hipStreamSynchronize",
             "event_record": "hipEventRecord", "event_sync": "hipEventSynchronize",
             "event_destroy": "hipEventDestroy", "elapsed_ms": "hipEventElapsedTime",
             "load_module": "hipModuleLoadData", "module_unload": "hipModuleUnload",
             "get_function": "hipModuleGetFunction", "end_capture": "hipStreamEndCapture",
             "graph_upload": "hipGraphUpload", "graph_launch": "hipGraphLaunch", "graph_destroy": "hipGraphDestroy",
             "graph_exec_destroy": "hipGraphExecDestroy"}

    def __init__(self, module=None):
        self.mod = import_hip() if module is None else module
        self.success = self.mod.hipError_t.hipSuccess

    def error_name(self, err) -> str:
        name = getattr(err, "name", None) or f"hipError_t {int(err)}"
        try:
            text = self.mod.hipGetErrorString(err)
            text = text[0] if isinstance(text, tuple) else text
            if text:
                return f"{name} ({text.decode() if isinstance(text, bytes) else text})"
        except Exception:
            pass
        return name

    def call(self, name: str, *args):
        result = getattr(self.mod, name)(*args)
        err = result[0]
        if err != self.success:
            raise HipError(f"{name}: {self.error_name(err)}", name, getattr(err, "name", str(err)))
        if len(result) == 1:
            return None
        return result[1] if len(result) == 2 else result[1:]

    # ---- device ----------------------------------------------------------------------------

    def init(self) -> None:
        self.call("hipInit", 0)

    def device_info(self, ordinal: int = 0) -> tuple[object, DeviceInfo]:
        count = self.call("hipGetDeviceCount")
        if ordinal >= count:
            raise HipError(f"hipDeviceGet: GPU {ordinal} requested; this machine has {count}", "hipDeviceGet")
        dev = self.call("hipDeviceGet", ordinal)
        props = self.call("hipGetDeviceProperties", ordinal)
        name = props.name if isinstance(props.name, str) else bytes(props.name).split(b"\0", 1)[0].decode()
        arch = props.gcnArchName if isinstance(props.gcnArchName, str) else bytes(props.gcnArchName).decode()
        total = int(self.call("hipDeviceTotalMem", dev))
        return dev, DeviceInfo(name=name.strip() or "AMD GPU", major=0, minor=0, total_memory=total, free_memory=total,
                               ordinal=ordinal, backend="hip", gcn_arch=arch.split(":", 1)[0].split("\0", 1)[0])

    def device_attribute(self, attr: str, dev) -> int:
        names = {"MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": "hipDeviceAttributeSharedMemPerBlockOptin"}
        return int(self.call("hipDeviceGetAttribute", getattr(self.mod.hipDeviceAttribute_t, names[attr]), dev))

    # ---- streams, events -------------------------------------------------------------------

    def stream_create(self):
        return self.call("hipStreamCreateWithFlags", 1)  # hipStreamNonBlocking

    def event_create(self, timing: bool = True):
        return self.call("hipEventCreateWithFlags", 0 if timing else 2)  # hipEventDisableTiming

    # ---- modules, launches, graphs ---------------------------------------------------------

    def func_attribute(self, attr: str, func) -> int:
        return int(self.call("hipFuncGetAttribute", getattr(self.mod.hipFunction_attribute, f"HIP_FUNC_ATTRIBUTE_{attr}"),
                             func))

    def func_set_max_dynamic_shared(self, func, nbytes: int) -> None:
        self.call("hipFuncSetAttribute", func, self.mod.hipFuncAttribute.hipFuncAttributeMaxDynamicSharedMemorySize, nbytes)

    def launch(self, func, grid: tuple[int, int, int], block_x: int, shared: int, stream, params_addr: int) -> None:
        self.call("hipModuleLaunchKernel", func, grid[0], grid[1], grid[2], block_x, 1, 1, shared, stream, params_addr, None)

    def begin_capture(self, stream) -> None:
        self.call("hipStreamBeginCapture", stream, self.mod.hipStreamCaptureMode.hipStreamCaptureModeThreadLocal)

    def instantiate(self, graph):
        return self.call("hipGraphInstantiate", graph, 0)[0]  # (exec, error node, log)

def query_device(driver: HipDriver | None = None, ordinal: int = 0) -> tuple[DeviceInfo | None, str]:
    """(DeviceInfo, "") for GPU `ordinal`, or (None, why) when there is no usable runtime or GPU."""
    try:
        drv = driver or HipDriver()
        drv.init()
        _, info = drv.device_info(ordinal)
        return info, ""
    except HipError as e:
        return None, str(e).split(" (", 1)[0]
    except Exception as e:  # hip-python raises its own error when libamdhip64.so is not there at all
        return None, f"hipInit: {type(e).__name__}: {e}".split("\n", 1)[0]
