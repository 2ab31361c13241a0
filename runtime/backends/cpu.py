"""The `cpu` backend: runs a bundle's plans step by step with the ops' native torch functions.

It is the reference the GPU backends are checked against, and what CI runs end to end. Every
activation lives in one arena tensor at the offset its plan gives, as on a GPU, so a wrong
arena placement shows up as wrong numbers here too.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import BundleError


class CpuBackend:
    name = "cpu"

    def __init__(self, bundle, num_kv_blocks: int):
        import safetensors.torch
        import torch

        import llmc.aot.ir  # noqa: F401  (registers the ops)
        from llmc.aot.ir import OPS

        self.torch, self.ops = torch, OPS
        self.bundle = bundle
        manifest = bundle.manifest
        self.weights = {}
        for rel in sorted(f for f in manifest["files"] if f.startswith("weights/")):
            self.weights.update(safetensors.torch.load_file(str(bundle.file(rel))))
        kv = manifest["kv_cache"]
        self.num_kv_blocks = num_kv_blocks
        shape = (num_kv_blocks, kv["block_size"], kv["num_kv_heads"], kv["head_dim"])
        dtype = getattr(torch, kv["dtype"])
        self.kv = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(kv["num_layers"])]
        self.arena = torch.empty(max(bundle.plan(n)["arena_bytes"] for n in bundle.plans()), dtype=torch.uint8)
        self.load_summary = {"weights_bytes": sum(t.numel() * t.element_size() for t in self.weights.values()),
                             "kv_tokens": num_kv_blocks * kv["block_size"]}

    @classmethod
    def open(cls, bundle, *, num_kv_blocks: int | None = None, **_) -> "CpuBackend":
        if bundle.manifest["target"]["backend"] != "cpu":
            target = bundle.manifest["target"]["name"]
            raise BundleError(f"bundle built for {target}; the cpu device runs cpu bundles only: rebuild with --target cpu")
        kv = bundle.manifest["kv_cache"]
        blocks_per_seq = -(-bundle.manifest["build"]["max_seq_len"] // kv["block_size"])
        return cls(bundle, num_kv_blocks or blocks_per_seq * bundle.manifest["build"]["max_batch_size"])

    def _buffer(self, plan: dict, name: str):
        spec = plan["buffers"][name]
        dtype = getattr(self.torch, spec["dtype"])
        count = int(np.prod(spec["shape"]))
        nbytes = count * self.torch.empty((), dtype=dtype).element_size()
        return self.arena[spec["offset"] : spec["offset"] + nbytes].view(dtype).view(spec["shape"])

    def _resolve(self, plan: dict, ref: dict, inputs: dict):
        if "buffer" in ref:
            return self._buffer(plan, ref["buffer"])
        if "input" in ref:
            return inputs[ref["input"]]
        if "weight" in ref:
            return self.weights[ref["weight"]]
        if "kv_cache" in ref:
            return self.kv[ref["layer"]][ref["kv_cache"] == "v"]
        if "list" in ref:
            return [self._resolve(plan, r, inputs) for r in ref["list"]]
        return ref["const"]

    def run(self, plan: dict, inputs: dict[str, np.ndarray], want_logits: bool):
        torch = self.torch
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}
        with torch.no_grad():
            for step in plan["steps"]:
                impl = self.ops[step["op"]].impls[step["provider"]]
                result = impl(*(self._resolve(plan, a, tensors) for a in step["args"]))
                outs = [] if result is None else [result] if isinstance(result, torch.Tensor) else list(result)
                for name, value in zip(step["outputs"], outs):
                    self._buffer(plan, name).copy_(value)
        tokens = self._buffer(plan, plan["outputs"]["next_tokens"]).numpy().copy()
        logits = self._buffer(plan, plan["outputs"]["logits"]).float().numpy().copy() if want_logits else None
        return tokens, logits

    def close(self) -> None:
        self.kv, self.weights = [], {}
