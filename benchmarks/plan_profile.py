"""Where a decode step's time goes: GPU time of each launch of a plan, and of the whole graph.

    python benchmarks/plan_profile.py BUNDLE [--plans decode_b1,decode_b8] [--repeats 50]

For each plan: the captured graph replayed back to back (GPU time per step, no host work), one
full `run()` as the engine calls it (host work included), and every launch timed alone
(eager, repeated), summed per op and provider. Prints a table; writes JSON to $OUT if set.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

from llmc.artifacts import Bundle
from llmc.runtime.backends.cuda import CudaBackend
from llmc.runtime.batch import fill_inputs
from llmc.runtime.bench import step_batch


def _timed(drv, stream, work, repeats: int) -> float:
    """Milliseconds per repeat of `work()` on `stream`, between two events."""
    start, end = drv.event_create(), drv.event_create()
    work()
    drv.call("cuEventRecord", start, stream)
    for _ in range(repeats):
        work()
    drv.call("cuEventRecord", end, stream)
    drv.call("cuEventSynchronize", end)
    ms = drv.elapsed_ms(start, end) / repeats
    for e in (start, end):
        drv.call("cuEventDestroy", e)
    return ms


def profile(backend: CudaBackend, name: str, repeats: int) -> dict:
    drv, stream, state = backend.drv, backend.stream, backend.plans[name]
    plan = state.plan
    block = backend.manifest["kv_cache"]["block_size"]
    context = 128
    pieces = [([5], context, list(range(b * 16, b * 16 + context // block + 1))) for b in range(plan["num_seqs"])]
    inputs = fill_inputs(plan, step_batch("decode", pieces, block))
    backend.run(plan, inputs, want_logits=False)
    result = {"plan": name, "context": context}
    if state.graph is not None:
        result["graph_ms"] = _timed(drv, stream, lambda: drv.call("cuGraphLaunch", state.graph, stream), repeats)
    t0 = time.perf_counter()
    for _ in range(repeats):
        backend.run(plan, inputs, want_logits=False)
    result["run_ms"] = (time.perf_counter() - t0) * 1e3 / repeats
    by_step = defaultdict(float)
    launches = iter(state.launches)
    for step in plan["steps"]:
        for _ in step.get("launches", []):
            launch = next(launches)
            ms = _timed(drv, stream, lambda: drv.launch(launch.func, launch.grid, launch.block_x, launch.shared,
                                                          stream, launch.params.address), repeats)
            by_step[f"{step['op']}/{step['provider']}"] += ms
    result["launches"] = len(state.launches)
    result["by_op_ms"] = dict(sorted(by_step.items(), key=lambda kv: -kv[1]))
    result["sum_of_launches_ms"] = sum(by_step.values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--plans", default="decode_b1,decode_b8")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    backend = CudaBackend.open(Bundle.open(args.bundle, verify="fast"))
    results = [profile(backend, name, args.repeats) for name in args.plans.split(",") if name in backend.plans]
    for r in results:
        print(f"\n{r['plan']} (context {r['context']}): graph replay {r.get('graph_ms', float('nan')):.3f} ms/step on the GPU, "
              f"run() {r['run_ms']:.3f} ms/step with host work; {r['launches']} launches, "
              f"{r['sum_of_launches_ms']:.3f} ms if timed one by one")
        for op, ms in r["by_op_ms"].items():
            print(f"  {op:40s} {ms * 1e3:9.1f} us")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "plan_profile.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
