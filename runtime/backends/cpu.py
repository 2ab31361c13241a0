"""The `cpu` backend: runs a bundle's plans step by step with the ops' native torch functions.

It is the reference the GPU backends are checked against, and what CI runs end to end. Every
activation lives in one arena tensor at the offset its plan gives, as on a GPU, so a wrong
arena placement shows up as wrong numbers here too.
"""

from __future__ import annotations

import numpy as np

from llmc.artifacts.manifest import DTYPES
from llmc.artifacts.plan_schema import INPUT_PADS, LOGPROB_OUTPUTS
from llmc.errors import BundleError
from llmc.runtime.sparse_inputs import NEUTRAL

CPU_KV_BYTES = 2 << 30  # the default KV pool on the cpu backend



class CpuBackend:
    name = "cpu"

    def __init__(self, bundle, num_kv_blocks: int, rank: int = 0):
        import safetensors.torch
        import torch

        import llmc.aot.ir  # noqa: F401  (registers the ops)
        from llmc.aot.ir import OPS
        from llmc.runtime.tensor_parallel.layout import weight_files

        self.torch, self.ops = torch, OPS
        self.bundle = bundle
        manifest = bundle.manifest
        self.weights = {}
        for rel in weight_files(manifest, rank):  # rank r of a tensor-parallel bundle: weights/rank{r}/
            self.weights.update(safetensors.torch.load_file(str(bundle.file(rel))))
        kv = manifest["kv_cache"]
        self.num_kv_blocks = num_kv_blocks
        shape = (num_kv_blocks, kv["block_size"], kv["num_kv_heads"], kv["head_dim"])
        dtype = getattr(torch, kv["dtype"])
        self.kv = [(torch.zeros(shape, dtype=dtype), torch.zeros(shape, dtype=dtype)) for _ in range(kv["num_layers"])]
        self.arena = torch.empty(max(bundle.plan(n)["arena_bytes"] for n in bundle.plans()), dtype=torch.uint8)
        self._plans: dict[str, dict] = {}
        self._inputs: dict[str, dict[str, np.ndarray]] = {}
        self._last_tokens = np.zeros(0, dtype=np.int32)
        self.load_summary = {"weights_bytes": sum(t.numel() * t.element_size() for t in self.weights.values()),
                             "kv_tokens": num_kv_blocks * kv["block_size"]}

    @classmethod
    def open(cls, bundle, *, num_kv_blocks: int | None = None, kv_cache_bytes: int = CPU_KV_BYTES, rank: int = 0,
             **_) -> "CpuBackend":
        """`num_kv_blocks` by default: as many as `kv_cache_bytes` hold, at most what the largest
        batch at full context can use. `rank`: which rank's weights to load (its collectives run on
        torch.distributed's default group, which runtime/tensor_parallel/ sets up)."""
        if bundle.manifest["target"]["backend"] != "cpu":
            target = bundle.manifest["target"]["name"]
            raise BundleError(f"bundle built for {target}; the cpu device runs cpu bundles only: rebuild with --target cpu")
        if num_kv_blocks is None:
            kv, build = bundle.manifest["kv_cache"], bundle.manifest["build"]
            blocks_per_seq = -(-build["max_seq_len"] // kv["block_size"])
            per_block = 2 * kv["num_layers"] * kv["block_size"] * kv["num_kv_heads"] * kv["head_dim"] * DTYPES[kv["dtype"]]
            num_kv_blocks = max(blocks_per_seq, min(blocks_per_seq * build["max_batch_size"], kv_cache_bytes // per_block))
        return cls(bundle, num_kv_blocks, rank)

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

    def run(self, plan: dict, inputs: dict[str, np.ndarray], want_logits: bool, want_logprobs: bool = False):
        """One step; `inputs` may leave out the sparse inputs when the step uses none (sparse_inputs.py)."""
        torch = self.torch
        unused = {key: np.full(spec["shape"], NEUTRAL[key], spec["dtype"])
                  for key, spec in plan["inputs"].items() if key in NEUTRAL and inputs.get(key) is None}
        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in {**inputs, **unused}.items()}
        with torch.no_grad():
            for step in plan["steps"]:
                impl = self.ops[step["op"]].impls[step["provider"]]
                result = impl(*(self._resolve(plan, a, tensors) for a in step["args"]))
                outs = [] if result is None else [result] if isinstance(result, torch.Tensor) else list(result)
                for name, value in zip(step["outputs"], outs):
                    self._buffer(plan, name).copy_(value)
        tokens = self._buffer(plan, plan["outputs"]["next_tokens"]).numpy().copy()
        logits = self._buffer(plan, plan["outputs"]["logits"]).float().numpy().copy() if want_logits else None
        if not want_logprobs:
            return tokens, logits
        return tokens, logits, tuple(self._buffer(plan, plan["outputs"][key]).numpy().copy() for key in LOGPROB_OUTPUTS)

    # -- the runner's protocol: fill `inputs(plan)` in place, `launch`, `wait` --------------------

    def inputs(self, plan_name: str) -> dict[str, np.ndarray]:
        views = self._inputs.get(plan_name)
        if views is None:
            plan = self._plan(plan_name)
            views = self._inputs[plan_name] = {
                key: np.full(spec["shape"], INPUT_PADS.get(key, 0), dtype=spec["dtype"]) for key, spec in plan["inputs"].items()
            }
        return views

    def launch(self, plan_name: str, feed=(), want_logits: bool = False, want_logprobs: bool = False):
        """Runs at once (the cpu is its own device); `feed` copies (input row, previous token row).
        `wait` gives (next_tokens, logits or None), plus the LOGPROB_OUTPUTS when `want_logprobs`."""
        views = self.inputs(plan_name)
        for dst, src in feed:
            views["input_ids"][dst] = self._last_tokens[src]
        result = self.run(self._plan(plan_name), views, want_logits, want_logprobs)
        self._last_tokens = result[0]
        return result

    def wait(self, handle):
        return handle

    def _plan(self, name: str) -> dict:
        plan = self._plans.get(name)
        if plan is None:
            plan = self._plans[name] = self.bundle.plan(name)
        return plan

    def close(self) -> None:
        self.kv, self.weights = [], {}
