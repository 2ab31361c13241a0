"""Running plans on the GPU backend: one synchronous step (`run`), and the runner's protocol
(`inputs`, `launch`, `wait`) that lets the host prepare step N+1 while step N runs (gpu.py).

A step's inputs reach the device in `_copy_inputs`: every input but the sparse ones in one copy,
and of the sparse ones (sparse_inputs.py) only what the step uses. The device keeps a plan's
edits from one step to the next, so a step with fewer edits than the last sets the rest to -1."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from llmc.artifacts.plan_schema import LOGPROB_OUTPUTS
from llmc.runtime.sparse_inputs import NEUTRAL, last_edit, live_edits, masked_rows

from .cuda_launch import PreparedLaunch, run_eager
from .cuda_memory import to_float32
from .driver import DriverError


@dataclass
class PlanState:
    plan: dict
    launches: list[PreparedLaunch]
    dev_inputs: int  # device address of this plan's inputs, back to back (256-aligned each)
    host_inputs: int  # their pinned host mirror, same layout
    views: dict[str, np.ndarray]  # numpy views of the pinned mirror, one per input
    slot_hosts: list[int] = None  # the two pinned mirrors (slot 0 is host_inputs)
    slot_views: list[dict[str, np.ndarray]] = None
    offsets: dict[str, int] = None  # input -> byte offset in the block (cuda_memory.input_offsets)
    dense_bytes: int = 0  # the leading run of every input but the sparse ones
    device_edits: int = 0  # leading rows of the device's logit_edit_index that may hold edits; the rest are -1
    outputs: dict = None  # next_tokens / logits / LOGPROB_OUTPUTS -> (arena offset, shape, dtype)
    graph: object = None  # graph exec, for captured plans
    copies: dict = None  # next_tokens / logits -> ((host ptr, arena offset, nbytes), numpy view of the host ptr)
    slot_copies: list[dict] = None  # the same per output slot (slot 0 is copies)


@dataclass
class Launched:
    state: PlanState
    slot: int
    want_logits: bool
    want_logprobs: bool = False



class GpuSteps:
    """The running half of GpuBackend (which loads everything these methods use)."""

    def _copy_inputs(self, state: PlanState, slot: int, edits: int) -> None:
        """Enqueue the copy of pinned slot `slot`'s inputs: the dense run; of the sparse inputs, the
        `edits` leading rows of the logit edits and the bitmask rows that bitmask_on reads. Device
        edit rows past `edits` that an earlier step filled are set to -1 (bytes 0xff)."""
        drv, stream, dev = self.drv, self.stream, state.dev_inputs
        host, views = state.slot_hosts[slot], state.slot_views[slot]

        def put(key: str, rows: range) -> None:  # rows of one sparse input, host to device
            row = views[key][0].nbytes
            start = state.offsets[key] + rows.start * row
            if rows:
                drv.copy_htod(dev + start, host + start, len(rows) * row, stream)

        drv.copy_htod(dev, host, state.dense_bytes, stream)
        if "logit_edit_index" in views:
            put("logit_edit_index", range(edits))
            put("logit_edit_values", range(edits))
            row = views["logit_edit_index"][0].nbytes
            stale = dev + state.offsets["logit_edit_index"] + edits * row
            if state.device_edits > edits:
                drv.memset_d8(stale, 0xFF, (state.device_edits - edits) * row, stream)
            state.device_edits = edits
        if "allowed_bitmask" in views:
            put("allowed_bitmask", masked_rows(views["bitmask_on"]))

    def _execute_checked(self, state: PlanState, doing: str, copies=(), edits: int = 0) -> None:
        """Slot 0's inputs in (`edits` rows of logit edits), the plan (graph or eager), `copies`
        (host ptr, arena offset, nbytes) out, sync. An asynchronous fault is reported with the plan's name."""
        drv, stream = self.drv, self.stream
        try:
            self._copy_inputs(state, 0, edits)
            self._replay(state)
            for dst, offset, nbytes in copies:
                drv.copy_dtoh(dst, self.arena + offset, nbytes, stream)
            drv.sync(stream)
        except DriverError as e:
            raise self._named(e, doing, state) from None

    def _replay(self, state: PlanState) -> None:
        if state.graph is not None:
            self.drv.graph_launch(state.graph, self.stream)
        else:
            run_eager(self.drv, self.stream, state.launches, self.sync_each_launch)

    def _named(self, e: DriverError, doing: str, state: PlanState) -> DriverError:
        """An asynchronous fault, reported with the plan's name."""
        asynchronous = e.func != self.drv.launch_func and not self.sync_each_launch
        hint = " (open with sync_each_launch=True to name the kernel)" if asynchronous else ""
        return type(e)(f"{e} while {doing} plan {state.plan['name']}{hint}", e.func, e.error)

    def _state(self, name: str) -> PlanState:
        state = self.plans.get(name)
        if state is None or self._closed:
            raise ValueError("the backend is closed" if self._closed else f"plan {name!r} is not loaded")
        if threading.get_ident() not in self._threads:  # a context is current per thread
            self.drv.set_current(self.ctx)
            self._threads.add(threading.get_ident())
        return state

    # -- the runner's protocol ---------------------------------------------------------------

    def inputs(self, plan_name: str) -> dict[str, np.ndarray]:
        """The pinned input arrays of the next launch (the slot whose last input copy is done)."""
        state, slot = self._state(plan_name), self._launches % 2
        if self._slot_busy[slot]:
            self.drv.event_sync(self._events[slot][0])
            self._slot_busy[slot] = False
        return state.slot_views[slot]

    def launch(self, plan_name: str, feed=(), want_logits: bool = False, want_logprobs: bool = False) -> Launched:
        """Enqueue one step; `feed` lists (input_ids row, row of the previous launch's next_tokens).
        The LOGPROB_OUTPUTS are copied back only with `want_logprobs`."""
        state, slot = self._state(plan_name), self._launches % 2
        drv, stream = self.drv, self.stream
        self._check_indices(state, state.slot_views[slot], skip=[dst for dst, _ in feed])
        if want_logits and "logits" not in state.copies:
            raise ValueError(f"{plan_name} has no logits output")
        if want_logprobs and LOGPROB_OUTPUTS[0] not in state.copies:
            raise ValueError(f"{plan_name} has no logprobs outputs; rebuild the bundle")
        copies = state.slot_copies[slot]
        views = state.slot_views[slot]
        try:
            self._copy_inputs(state, slot, live_edits(views["logit_edit_index"]) if "logit_edit_index" in views else 0)
            drv.event_record(self._events[slot][0], stream)
            self._slot_busy[slot] = True
            ids = state.dev_inputs + state.offsets["input_ids"]
            for dst, src, n in _runs(feed):
                drv.copy_dtod(ids + 4 * dst, self._prev_tokens + 4 * src, 4 * n, stream)
            self._replay(state)
            for key in ("next_tokens",) + ("logits",) * want_logits + LOGPROB_OUTPUTS * want_logprobs:
                dst, offset, nbytes = copies[key][0]
                drv.copy_dtoh(dst, self.arena + offset, nbytes, stream)
            drv.event_record(self._events[slot][1], stream)
        except DriverError as e:
            raise self._named(e, "launching", state) from None
        self._prev_tokens = self.arena + state.outputs["next_tokens"][0]
        self._launches += 1
        return Launched(state, slot, want_logits, want_logprobs)

    def wait(self, launched: Launched) -> tuple:
        """The step's (next_tokens int32 [R], logits float32 [R, V] or None), plus the three
        LOGPROB_OUTPUTS when launched with `want_logprobs`; call it before the launch after next,
        which reuses the step's output slot."""
        try:
            self.drv.event_sync(self._events[launched.slot][1])
        except DriverError as e:
            raise self._named(e, "running", launched.state) from None
        copies = launched.state.slot_copies[launched.slot]
        tokens = copies["next_tokens"][1].astype(np.int32)
        logits = to_float32(copies["logits"][1], launched.state.outputs["logits"][2]) if launched.want_logits else None
        if not launched.want_logprobs:
            return tokens, logits
        return tokens, logits, tuple(copies[key][1].copy() for key in LOGPROB_OUTPUTS)

    # -- one synchronous step ----------------------------------------------------------------

    def run(self, plan: dict, inputs: dict[str, np.ndarray], want_logits: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Run one step of `plan`; returns (next_tokens int32 [R], logits float32 [R, V] or None).
        `inputs` may leave out the sparse inputs when the step uses none (sparse_inputs.py)."""
        name = plan["name"]
        state = self._state(name)
        for key, view in state.views.items():
            value = inputs.get(key)
            if value is None and key in NEUTRAL:
                continue
            if value is None:
                raise ValueError(f"{name}: input {key!r} is missing")
            value = np.asarray(value)
            if value.shape != view.shape:
                raise ValueError(f"{name}: input {key!r} has shape {value.shape}; the plan needs {view.shape}")
            np.copyto(view, value, casting="same_kind")
        edits = self._given_edits(state, inputs)
        self._check_indices(state)
        if want_logits and "logits" not in state.copies:
            raise ValueError(f"{name} has no logits output")
        tokens = state.copies["next_tokens"]
        logits = state.copies["logits"] if want_logits else None
        self._execute_checked(state, "running", [tokens[0], logits[0]] if want_logits else [tokens[0]], edits)
        # copies out of the pinned buffer, which the next step reuses
        return tokens[1].astype(np.int32), (to_float32(logits[1], state.outputs["logits"][2]) if want_logits else None)

    def _given_edits(self, state: PlanState, inputs: dict) -> int:
        """Rows of logit edits `run` was given (0 when left out), after refusing a step that leaves out
        a sparse input it reads."""
        views, name = state.views, state.plan["name"]
        given = {key for key in NEUTRAL if key in views and inputs.get(key) is not None}
        if "allowed_bitmask" in views and "allowed_bitmask" not in given and masked_rows(views["bitmask_on"]):
            raise ValueError(f"{name}: input 'allowed_bitmask' is missing; bitmask_on sets rows that read it")
        if "logit_edit_index" in given and "logit_edit_values" not in given:
            raise ValueError(f"{name}: input 'logit_edit_values' is missing; logit_edit_index is given")
        return last_edit(views["logit_edit_index"]) if "logit_edit_index" in given else 0

    def _check_indices(self, state: PlanState, views: dict | None = None, skip=()) -> None:
        """Refuse ids that would make a kernel read or write out of bounds (cheap: the arrays are small;
        viewed as unsigned, a negative id is huge, so one max() checks both ends). `skip`: input_ids
        rows the device fills (fed tokens)."""
        v = state.views if views is None else views
        checks = (("input_ids", self.manifest["model"]["vocab_size"]), ("block_tables", self.num_kv_blocks),
                  ("slot_mapping", self.num_kv_blocks * self.kv.block_size))
        for key, high in checks:
            if key not in v or not v[key].size:
                continue
            ids = v[key].view(np.uint32)
            if key == "input_ids" and skip:
                ids = np.delete(ids, skip)
                if not ids.size:
                    continue
            if key == "slot_mapping":  # -1 (write nothing) is allowed
                ids = ids + np.uint32(1)
                high += 1
            if ids.max() >= high:
                raise ValueError(f"{state.plan['name']}: {key} holds values outside "
                                 f"[{-1 if key == 'slot_mapping' else 0}, {high - (key == 'slot_mapping')}): "
                                 f"{v[key].min()}..{v[key].max()}")


def _runs(feed) -> list[tuple[int, int, int]]:
    """(dst, src) pairs as (dst, src, count) runs of consecutive rows: one copy per run."""
    runs: list[list[int]] = []
    for dst, src in feed:
        if runs and runs[-1][0] + runs[-1][2] == dst and runs[-1][1] + runs[-1][2] == src:
            runs[-1][2] += 1
        else:
            runs.append([dst, src, 1])
    return [tuple(r) for r in runs]
