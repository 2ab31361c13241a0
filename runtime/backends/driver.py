"""What the GPU backend needs from a driver, shared by cuda (cuda-python) and hip (hip-python).

`GpuBackend` calls only these methods of its driver object (`cuda_driver.Driver`,
`hip_driver.HipDriver`): device (init, device_info, retain_context, set_current,
release_context, device_attribute, mem_info), memory (alloc, free, alloc_host, free_host,
memset_d8, copy_htod, copy_dtoh, copy_dtod), streams and events (stream_create, stream_destroy,
sync, event_create, event_record, event_sync, event_destroy, elapsed_ms), modules and launches
(load_module, module_unload, get_function, func_attribute, func_set_max_dynamic_shared, launch),
graphs (begin_capture, end_capture, instantiate, graph_upload, graph_launch, graph_destroy,
graph_exec_destroy). A failed call raises a `DriverError` naming the function and the error.
"""

from __future__ import annotations

import ctypes

from llmc.errors import LlmcError


class DriverError(LlmcError):
    """A GPU driver call failed."""

    def __init__(self, message: str, func: str = "", error: str = ""):
        super().__init__(message)
        self.func, self.error = func, error


def host_array(ptr: int, nbytes: int):
    """A writable ctypes byte array over host memory at `ptr` (a pinned buffer), for numpy views and readinto."""
    return (ctypes.c_ubyte * nbytes).from_address(ptr)


class CheckedCalls:
    """The driver methods that are one checked call each; a binding names its function for each
    in `CALLS` and provides `call(name, *args)`."""

    CALLS: dict[str, str] = {}

    def _c(self, method: str, *args):
        return self.call(self.CALLS[method], *args)

    def retain_context(self, dev):
        ctx = self._c("retain_context", dev)
        self.set_current(ctx)
        return ctx

    def set_current(self, ctx) -> None:
        self._c("set_current", ctx)

    def release_context(self, dev) -> None:
        self._c("release_context", dev)

    def mem_info(self) -> tuple[int, int]:
        free, total = self._c("mem_info")
        return int(free), int(total)

    def alloc(self, nbytes: int) -> int:
        return int(self._c("alloc", max(int(nbytes), 1)))

    def free(self, ptr: int) -> None:
        self._c("free", ptr)

    def alloc_host(self, nbytes: int) -> int:
        """Pinned (page-locked) host memory, the source of every async host-to-device copy."""
        return int(self._c("alloc_host", max(int(nbytes), 1), 0))

    def free_host(self, ptr: int) -> None:
        self._c("free_host", ptr)

    def memset_d8(self, ptr: int, value: int, nbytes: int, stream) -> None:
        if nbytes:
            self._c("memset_d8", ptr, value, nbytes, stream)

    def copy_htod(self, dst: int, src_host: int, nbytes: int, stream) -> None:
        self._c("copy_htod", dst, src_host, nbytes, stream)

    def copy_dtoh(self, dst_host: int, src: int, nbytes: int, stream) -> None:
        self._c("copy_dtoh", dst_host, src, nbytes, stream)

    def copy_dtod(self, dst: int, src: int, nbytes: int, stream) -> None:
        self._c("copy_dtod", dst, src, nbytes, stream)

    def stream_destroy(self, stream) -> None:
        self._c("stream_destroy", stream)

    def sync(self, stream) -> None:
        self._c("sync", stream)

    def event_record(self, event, stream) -> None:
        self._c("event_record", event, stream)

    def event_sync(self, event) -> None:
        self._c("event_sync", event)

    def event_destroy(self, event) -> None:
        self._c("event_destroy", event)

    def elapsed_ms(self, start, end) -> float:
        return float(self._c("elapsed_ms", start, end))

    def load_module(self, image: bytes):
        return self._c("load_module", image)

    def module_unload(self, module) -> None:
        self._c("module_unload", module)

    def get_function(self, module, name: str):
        return self._c("get_function", module, name.encode())

    def end_capture(self, stream):
        return self._c("end_capture", stream)

    def graph_upload(self, graph_exec, stream) -> None:
        self._c("graph_upload", graph_exec, stream)

    def graph_launch(self, graph_exec, stream) -> None:
        self._c("graph_launch", graph_exec, stream)

    def graph_destroy(self, graph) -> None:
        self._c("graph_destroy", graph)

    def graph_exec_destroy(self, graph_exec) -> None:
        self._c("graph_exec_destroy", graph_exec)
