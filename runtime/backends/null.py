"""A backend that returns at once: every step samples token `token` in every row. For measuring
the host's work per step (benchmarks/host_overhead.py) without any device time."""

from __future__ import annotations

import numpy as np

from llmc.artifacts.plan_schema import INPUT_PADS


class NullBackend:
    name = "null"

    def __init__(self, bundle, num_kv_blocks: int, token: int = 5):
        self.num_kv_blocks, self.token = num_kv_blocks, token
        self.plans = {name: bundle.plan(name) for name in bundle.plans()}
        self._inputs = {name: {k: np.full(s["shape"], INPUT_PADS.get(k, 0), dtype=s["dtype"]) for k, s in p["inputs"].items()}
                        for name, p in self.plans.items()}
        self._tokens = {name: np.full(p["num_logits"], token, dtype=np.int32) for name, p in self.plans.items()}
        self.load_summary = {"kv_blocks": num_kv_blocks}

    def inputs(self, plan_name: str) -> dict[str, np.ndarray]:
        return self._inputs[plan_name]

    def launch(self, plan_name: str, feed=(), want_logits: bool = False):
        return plan_name

    def wait(self, plan_name):
        return self._tokens[plan_name], None

    def close(self) -> None:
        pass
