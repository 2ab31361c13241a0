"""The GPU backend shared by cuda and hip: a bundle's plans over a driver layer (driver.py).

At `open`: compatibility check, one context and stream, every kernel module loaded once,
weights uploaded through pinned staging into one allocation, one activation arena shared by
all plans, per-plan input buffers, the KV pool sized from free memory, every plan run once
(a warm-up that also checks every launch), and one graph captured per decode plan.

The runner's protocol (runner.py): `inputs(plan)` hands out one of two pinned input mirrors
(alternating, so the host fills step N+1 while step N's copy may still be in flight),
`launch(plan, feed)` enqueues the input copy (of the sparse inputs only what the step uses,
gpu_steps.py), the device-side copies of `feed` (tokens sampled by the previous launch, read
from the arena where it left them), the graph and the copy of the sampled tokens into one of
two pinned output slots, and `wait` blocks on that step's event.
`run` is one synchronous step. Never imports torch, triton or transformers.
"""

from __future__ import annotations

import math
import threading
import time

from llmc.artifacts.manifest import DTYPES
from llmc.artifacts.plan_schema import INPUT_PADS, LOGPROB_OUTPUTS
from llmc.errors import BundleError
from llmc.runtime.compat import check_compat
from llmc.runtime.sparse_inputs import NEUTRAL
from llmc.runtime.tensor_parallel.layout import weight_files

from .cuda_launch import capture_graph, load_kernels, prepare_launch, scratch_bytes
from .cuda_memory import (ALIGN, Allocations, KvSpec, align, copy_bandwidth, host_view, input_offsets,
                          kv_blocks_for_memory, layout_weights, upload_weights)
from .driver import DriverError
from .nccl import Communicator, prepare_collective
from .gpu_steps import GpuSteps, PlanState

KV_RESERVE = 256 << 20  # bytes left free after the KV pool: graph executables, driver needs
MAX_KV_BLOCKS = 1 << 21  # bounds the host's block bookkeeping; real models reach memory first


def checked_driver(driver_cls, query_device, backend: str, manifest: dict, device_index: int, driver_module):
    """A driver for GPU `device_index`, after refusing in one sentence (BundleError) a bundle that
    GPU cannot run. Cheap: call it before verifying a large bundle's digests."""
    try:
        drv = driver_cls(driver_module)
    except DriverError as e:  # the bindings themselves are missing
        raise BundleError(str(e)) from None
    device, why = query_device(drv, device_index)
    check_compat(manifest, device, backend, no_device_reason=why)
    return drv, device


def as_bundle(bundle):
    """A `llmc.artifacts.reader.Bundle`, opening (and verifying) a path if one is given."""
    if hasattr(bundle, "manifest") and hasattr(bundle, "plan"):
        return bundle
    from llmc.artifacts.reader import Bundle

    return Bundle.open(bundle)


class GpuBackend(GpuSteps):
    name = "gpu"
    driver_class = None  # the driver layer over one vendor's bindings (cuda_driver.Driver, hip_driver.HipDriver)
    query_device = None  # that layer's query_device(driver, index) -> (DeviceInfo | None, why)

    @classmethod
    def check_device(cls, manifest: dict, device_index: int = 0, driver_module=None):
        """Query GPU `device_index` and refuse, in one sentence, a bundle it cannot run (BundleError)."""
        return checked_driver(cls.driver_class, cls.query_device, cls.name, manifest, device_index, driver_module)

    @classmethod
    def open(cls, bundle, *, gpu_memory_utilization: float = 0.9, num_kv_blocks: int | None = None,
             device_index: int = 0, capture_prefill: bool = False, sync_each_launch: bool = False,
             driver_module=None, rank: int = 0, rendezvous=None, nccl_module=None) -> "GpuBackend":
        """Load `bundle` (a Bundle or a path) onto GPU `device_index` (+ `rank`).

        capture_prefill: capture prefill plans as graphs too (by default they run eagerly).
        sync_each_launch: synchronize after every eager launch so a fault names its kernel (debugging).
        driver_module: a stand-in for `cuda.bindings.driver` (tests).
        rank, rendezvous: rank r of a tensor-parallel bundle loads weights/rank{r}/ and makes its NCCL
        communicator from rendezvous.nccl_unique_id (runtime/tensor_parallel/); nccl_module: a stand-in
        for `nccl.bindings.nccl` (tests).
        """
        start = time.perf_counter()
        if not 0 < gpu_memory_utilization <= 1:
            raise BundleError(f"--gpu-memory-utilization must be in (0, 1], got {gpu_memory_utilization}")
        bundle = as_bundle(bundle)
        device_index += rank
        drv, _ = cls.check_device(bundle.manifest, device_index, driver_module)
        self = cls(bundle, drv, device_index, sync_each_launch)
        self.rank, self._rendezvous, self._nccl_module = rank, rendezvous, nccl_module
        try:
            self._load(gpu_memory_utilization, num_kv_blocks, capture_prefill)
        except BaseException:
            try:
                self.close()
            except Exception:  # the load error is the one to report
                pass
            raise
        self.load_summary["load_seconds"] = round(time.perf_counter() - start, 3)
        return self

    def __init__(self, bundle, drv, device_index: int, sync_each_launch: bool):
        self.bundle, self.drv, self.sync_each_launch = bundle, drv, sync_each_launch
        self.manifest = bundle.manifest
        self.warp_size = int(self.manifest["target"].get("warp_size", 32))
        self.allocs = Allocations(drv)
        self.modules: list = []
        self.plans: dict[str, PlanState] = {}
        self.stream = self.ctx = self.dev = self.device = None
        self.num_kv_blocks = 0
        self.load_summary: dict = {}
        self._device_index = device_index
        self._threads: set[int] = set()
        self._closed = False
        self._launches = 0  # launches so far: the next one uses pinned slot _launches % 2
        self._events: list = []  # per slot: (inputs copied, step done)
        self._slot_busy = [False, False]
        self._prev_tokens = 0  # device address of the last launch's next_tokens
        self.rank, self.comm = 0, None  # a tensor-parallel rank's NCCL communicator (nccl.py)
        self._rendezvous = self._nccl_module = None

    # ---- loading -------------------------------------------------------------------------------

    def _load(self, utilization: float, num_kv_blocks: int | None, capture_prefill: bool) -> None:
        drv, manifest = self.drv, self.manifest
        self.dev, self.device = drv.device_info(self._device_index)
        self.ctx = drv.retain_context(self.dev)
        self._threads.add(threading.get_ident())
        self.stream = drv.stream_create()
        if self._rendezvous is not None and self._rendezvous.world_size > 1:  # NCCL uses the current context's device
            self.comm = Communicator(self._rendezvous.world_size, self.rank, self._rendezvous.nccl_unique_id,
                                     self._nccl_module)
        plans = {name: self.bundle.plan(name) for name in self.bundle.plans()}
        if not plans:
            raise BundleError(f"{getattr(self.bundle, 'label', 'the bundle')} has no plans; rebuild it")
        kernels, self.modules = load_kernels(drv, self.bundle, plans, self.dev, self.device, self.warp_size)

        files = weight_files(manifest, self.rank)  # weights/rank{r}/ of a tensor-parallel bundle
        self.weight_layout = layout = layout_weights([self.bundle.file(f) for f in files])
        free, _ = drv.mem_info()
        if layout.total_bytes > free:
            raise BundleError(f"the weights need {layout.total_bytes / 1e9:.2f} GB; {self.device.name} has "
                              f"{free / 1e9:.2f} GB free: free the GPU or use a larger one")
        self.weights = self.allocs.alloc(layout.total_bytes, "the weights")
        upload_weights(drv, layout, self.weights, self.stream)

        self.arena_bytes = align(max(p["arena_bytes"] for p in plans.values()) or ALIGN)
        self.arena = self.allocs.alloc(self.arena_bytes, "the activation arena")
        drv.memset_d8(self.arena, 0, self.arena_bytes, self.stream)
        inputs = self._alloc_inputs(plans)
        scratch = self._alloc_scratch(plans, kernels)
        limited_by = self._alloc_kv(plans, utilization, num_kv_blocks)

        for name, plan in plans.items():
            resolve = self._resolver(plan, inputs[name]["dev_inputs"])
            launches = []
            for i, step in enumerate(plan["steps"]):
                where = f"{name} step {i} ({step['node']})"
                if "collective" in step:  # an NCCL call, before the step's kernels
                    launches.append(prepare_collective(step["collective"], self.comm, resolve, where))
                launches += [prepare_launch(launch, *kernels[launch["kernel"]], resolve, scratch, where, self.warp_size)
                             for launch in step.get("launches", [])]
            self.plans[name] = PlanState(plan, launches, **inputs[name], outputs=_outputs(plan))
        self._alloc_outputs()
        self._events = [(drv.event_create(timing=False), drv.event_create(timing=False)) for _ in range(2)]

        for name, state in self.plans.items():  # a warm-up run checks every launch; then capture
            for views in state.slot_views:
                for key, view in views.items():
                    view.fill(INPUT_PADS.get(key, 0))
            self._execute_checked(state, "warming up")
            if state.plan["kind"] == "decode" or capture_prefill:
                state.graph = capture_graph(drv, self.stream, state.launches, name)
        drv.sync(self.stream)
        self.load_summary = {
            "device": self.device.name, "target": manifest["target"]["name"],
            "weights_bytes": layout.data_bytes, "num_modules": len(self.modules), "num_plans": len(self.plans),
            "num_graphs": sum(s.graph is not None for s in self.plans.values()), "arena_bytes": self.arena_bytes,
            "kv_blocks": self.num_kv_blocks, "kv_tokens": self.num_kv_blocks * self.kv.block_size,
            "kv_bytes": self.kv.total_bytes(self.num_kv_blocks), "kv_limited_by": limited_by,
            "gpu_memory_utilization": utilization, "device_bytes": self.allocs.device_bytes,
        }

    def _alloc_inputs(self, plans: dict[str, dict]) -> dict[str, dict]:
        """One device and two pinned allocations (alternate steps) holding every plan's inputs; each
        plan keeps its own slice, so a captured graph's pointers stay valid.
        name -> PlanState's fields of its inputs."""
        layouts, total = {}, 0
        for name, plan in plans.items():
            offsets, size = input_offsets(plan)
            layouts[name], total = (total, offsets, size), total + size
        dev = self.allocs.alloc(max(total, ALIGN), "the plans' inputs")
        hosts = [self.allocs.alloc_host(max(total, ALIGN)) for _ in range(2)]
        self.drv.memset_d8(dev, 0, total, self.stream)
        result = {}
        for name, (base, offsets, size) in layouts.items():
            specs = plans[name]["inputs"]
            slot_views = [{key: host_view(host + base + offsets[key], spec["shape"], spec["dtype"])
                           for key, spec in specs.items()} for host in hosts]
            # the memset's zeros read as edits (row 0, token 0) in every row, until the warm-up resets them
            edits = specs["logit_edit_index"]["shape"][0] if "logit_edit_index" in specs else 0
            result[name] = {"dev_inputs": dev + base, "host_inputs": hosts[0] + base, "views": slot_views[0],
                            "slot_hosts": [host + base for host in hosts], "slot_views": slot_views, "offsets": offsets,
                            "dense_bytes": min((offsets[key] for key in NEUTRAL if key in offsets), default=size),
                            "device_edits": edits}
        return result

    def _alloc_scratch(self, plans: dict[str, dict], kernels: dict) -> dict[str, int]:
        """One global and one profile scratch buffer, as large as the largest launch needs
        (launches run one after another on one stream, so they can share it)."""
        scratch = {}
        for kind in ("global", "profile"):
            need, alignment = 0, 1
            for launch in (l for p in plans.values() for s in p["steps"] for l in s.get("launches", [])):
                entry = kernels[launch["kernel"]][0]
                need = max(need, scratch_bytes(entry, launch["grid"], kind))
                alignment = max(alignment, entry[f"{kind}_scratch_align"])
            scratch[kind] = align(self.allocs.alloc(need + alignment, f"{kind} scratch"), alignment) if need else 0
        return scratch

    def _alloc_kv(self, plans: dict[str, dict], utilization: float, num_kv_blocks: int | None) -> str:
        """The KV pool, after everything else: from free memory unless `num_kv_blocks` is given."""
        self.kv = KvSpec.from_manifest(self.manifest)
        if num_kv_blocks is None:
            free = self.drv.mem_info()[0]
            num_kv_blocks, limited_by = kv_blocks_for_memory(free, utilization, KV_RESERVE, self.kv, MAX_KV_BLOCKS)
            if num_kv_blocks < 1:
                raise BundleError(f"no GPU memory is left for the KV cache ({free / 1e9:.2f} GB free after the weights; "
                                  f"a block needs {self.kv.bytes_per_block / 1e6:.2f} MB): raise "
                                  "--gpu-memory-utilization or free the GPU")
        elif num_kv_blocks < 1:
            raise BundleError(f"num_kv_blocks must be >= 1, got {num_kv_blocks}")
        else:
            limited_by = "requested"
        self.num_kv_blocks = int(num_kv_blocks)
        nbytes = self.kv.total_bytes(self.num_kv_blocks)
        self.kv_base = self.allocs.alloc(nbytes, f"the KV cache ({self.num_kv_blocks} blocks)")
        self.drv.memset_d8(self.kv_base, 0, nbytes, self.stream)
        return limited_by

    def _alloc_outputs(self) -> None:
        """Two pinned buffers (alternate steps) that every plan's outputs are copied into; each plan
        keeps, per slot and output, the copy to make (host ptr, arena offset, bytes) and a numpy view
        of where it lands."""
        size = max(sum(align(math.prod(shape) * DTYPES[dtype]) for _, shape, dtype in state.outputs.values())
                   for state in self.plans.values())
        hosts = [self.allocs.alloc_host(size) for _ in range(2)]
        for state in self.plans.values():
            state.slot_copies = []
            for host in hosts:
                copies, dst = {}, host
                for key, (offset, shape, dtype) in state.outputs.items():
                    nbytes = math.prod(shape) * DTYPES[dtype]
                    copies[key] = ((dst, offset, nbytes), host_view(dst, shape, dtype))
                    dst += align(nbytes)
                state.slot_copies.append(copies)
            state.copies = state.slot_copies[0]

    def _resolver(self, plan: dict, dev_inputs: int):
        offsets, _ = input_offsets(plan)

        def resolve(ref: dict, where: str) -> int:
            if "buffer" in ref:
                return self.arena + plan["buffers"][ref["buffer"]]["offset"]
            if "input" in ref:
                return dev_inputs + offsets[ref["input"]]
            if "weight" in ref:
                slot = self.weight_layout.slots.get(ref["weight"])
                if slot is None:
                    raise BundleError(f"{where}: weight {ref['weight']!r} is not in the bundle's weights; rebuild it")
                return self.weights + slot.offset
            if "kv_cache" in ref:
                return self.kv.pointer(self.kv_base, self.num_kv_blocks, ref["layer"], ref["kv_cache"])
            raise BundleError(f"{where}: cannot resolve {ref}; rebuild the bundle")

        return resolve
    def measure_copy_bandwidth(self, nbytes: int = 1 << 30) -> float:
        """Device-to-device copy bandwidth in bytes/s, bytes read + written (the decode floor's denominator)."""
        return copy_bandwidth(self.drv, self.stream, nbytes)

    def abort(self) -> None:
        """A peer rank died: abort the communicator so a step blocked on it returns (any thread)."""
        if self.comm is not None:
            self.comm.abort()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        drv, errors = self.drv, []

        def attempt(fn, *args):
            try:
                fn(*args)
            except Exception as e:  # free everything else anyway
                errors.append(e)

        if self.stream is not None:
            attempt(drv.sync, self.stream)
        for state in self.plans.values():
            if state.graph is not None:
                attempt(drv.graph_exec_destroy, state.graph)
                state.graph = None
        for event in (e for pair in self._events for e in pair):
            attempt(drv.event_destroy, event)
        self._events = []
        for module in self.modules:
            attempt(drv.module_unload, module)
        self.modules = []
        if self.comm is not None:
            attempt(self.comm.destroy)
        attempt(self.allocs.free_all)
        if self.stream is not None:
            attempt(drv.stream_destroy, self.stream)
        if self.ctx is not None:
            attempt(drv.release_context, self.dev)
        self.stream = self.ctx = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "GpuBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _outputs(plan: dict) -> dict[str, tuple[int, tuple[int, ...], str]]:
    if "next_tokens" not in plan["outputs"]:
        raise BundleError(f"plans/{plan['name']}.json has no next_tokens output; rebuild the bundle")
    result = {}
    for key in ("next_tokens", "logits", *LOGPROB_OUTPUTS):
        if key in plan["outputs"]:
            buf = plan["buffers"][plan["outputs"][key]]
            result[key] = (buf["offset"], tuple(buf["shape"]), buf["dtype"])
    return result

