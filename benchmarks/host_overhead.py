"""Host work per engine decode step (scheduler, runner input filling, output processing with
detokenization), over a backend that returns at once, so nothing but Python is timed. Runs
anywhere (no GPU). Batch 1, 8, 64 and 256, with and without overlap.

    python benchmarks/host_overhead.py BUNDLE [--steps 200] [--batches 1,8,64,256]
"""

from __future__ import annotations

import argparse
import gc
import time

from llmc.artifacts import Bundle
from llmc.runtime import Engine, SamplingParams
from llmc.runtime.backends.null import NullBackend


def measure(bundle, batch: int, steps: int, overlap: bool, temperature: float, repeats: int = 5) -> float:
    """The best over `repeats` of the mean seconds per decode step with `batch` sequences decoding
    (the best: other processes on a shared machine only ever add time)."""
    block = bundle.manifest["kv_cache"]["block_size"]
    blocks = batch * -(-(8 + steps + 4) // block) + 16
    results = []
    for r in range(repeats):
        engine = Engine(bundle, NullBackend(bundle, blocks), max_num_seqs=batch, overlap=overlap)
        params = SamplingParams(max_tokens=steps + 3, temperature=temperature, ignore_eos=True, seed=1)
        for i in range(batch):
            engine.add_request(f"{r}-{i}", [3, 4, 5, 6, 7, 8, 9, 10], params)
        while engine.stats()["num_waiting"] or engine.scheduler.running[-1].num_computed_tokens < 8:
            engine.step()  # the prefills
        engine.step()
        gc.collect()
        gc.disable()
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        results.append((time.perf_counter() - start) / steps)
        gc.enable()
        while engine.has_unfinished():
            engine.step()
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batches", default="1,8,64,256")
    args = parser.parse_args()
    with Bundle.open(args.bundle) as bundle:
        top = bundle.manifest["build"]["max_batch_size"]
        print(f"{'batch':>5} {'temperature':>11} {'overlap':>8} {'host us/step':>12}")
        for batch in (int(b) for b in args.batches.split(",")):
            if batch > top:
                print(f"{batch:>5}  skipped: the bundle's largest decode bucket is {top}")
                continue
            for temperature in (0.0, 0.8):
                for overlap in (False, True):
                    us = measure(bundle, batch, args.steps, overlap, temperature) * 1e6
                    print(f"{batch:>5} {temperature:>11} {str(overlap):>8} {us:>12.1f}")


if __name__ == "__main__":
    main()
