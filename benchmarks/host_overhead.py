"""Host work per engine step (scheduler, batch building, input filling, stop checks), with a backend
that returns at once, so nothing but Python is timed. Runs anywhere (no GPU).

    python benchmarks/host_overhead.py BUNDLE [--steps 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from llmc.runtime import Engine, SamplingParams


class _InstantBackend:
    def __init__(self, num_kv_blocks: int):
        self.num_kv_blocks = num_kv_blocks

    def run(self, plan, inputs, want_logits):
        return np.full(plan["num_logits"], 5, dtype=np.int32), None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bundle")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    engine = Engine.load(args.bundle, device="cpu")
    engine.backend = _InstantBackend(engine.backend.num_kv_blocks)
    for temperature in (0.0, 0.8):
        for batch in (1, 8):
            for i in range(batch):
                engine.add_request(f"{temperature}-{batch}-{i}", [3, 4, 5, 6],
                                   SamplingParams(max_tokens=args.steps + 2, temperature=temperature, ignore_eos=True))
            engine.step()  # the prefill
            start = time.perf_counter()
            for _ in range(args.steps):
                engine.step()
            per_step = (time.perf_counter() - start) / args.steps
            print(f"temperature {temperature}, batch {batch}: {per_step * 1e6:.0f} us of host work per decode step")
            while engine.has_unfinished():
                engine.step()


if __name__ == "__main__":
    main()
