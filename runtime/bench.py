"""`llmc bench`: latency in the shape of `vllm bench latency`, throughput through continuous
batching, every number next to the hardware floor.

Latency mode drives a backend's plans directly with a fixed batch (B random prompts of the same
length, greedy, no early stop), so each step is timed on its own: time to first token (the
prefill steps), decode ms per step (one plan run each, a graph replay on cuda), and the whole
generation, whose average and percentiles are what vLLM prints. The floor of a decode step is
reading the weights once: weight bytes / device-to-device copy bandwidth, measured on the spot.
Throughput mode hands N requests to the engine and reports requests/s and tokens/s.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from llmc.errors import UserError
from llmc.runtime.batch import StepBatch, fill_inputs, pick_plan
from llmc.runtime.sampling_params import SamplingParams

PERCENTILES = (10, 25, 50, 75, 90, 99)


@dataclass(frozen=True)
class BenchConfig:
    batch_size: int = 8
    input_len: int = 32
    output_len: int = 128
    num_iters_warmup: int = 10
    num_iters: int = 30
    seed: int = 0

    def __post_init__(self):
        for name in ("batch_size", "input_len", "output_len", "num_iters"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.num_iters_warmup < 0:
            raise UserError(f"--num-iters-warmup must be >= 0, got {self.num_iters_warmup}")


# ---- statistics and the floor ------------------------------------------------------------------


def percentiles(values: list[float], ps=PERCENTILES) -> dict[int, float]:
    """Linear-interpolated percentiles (numpy's default, as vLLM reports them)."""
    return {p: float(np.percentile(np.asarray(values, dtype=np.float64), p)) for p in ps}


def floor_seconds(weight_bytes: int, bandwidth: float | None) -> float | None:
    """Shortest possible decode step: every weight byte read once at copy bandwidth (bytes/s)."""
    return weight_bytes / bandwidth if bandwidth else None


def ratio(value: float | None, reference: float | None) -> float | None:
    return value / reference if value is not None and reference else None


def weight_bytes(bundle) -> int:
    """Bytes of tensor data in the bundle's weights (headers only are read)."""
    from llmc.runtime.backends.cuda_memory import read_safetensors_header  # plain file reading, no driver

    total = 0
    for rel in sorted(f for f in bundle.manifest["files"] if f.startswith("weights/") and f.endswith(".safetensors")):
        total += sum(end - begin for _, _, begin, end in read_safetensors_header(bundle.file(rel)).values())
    return total


def process_uptime() -> float | None:
    """Seconds since this process started (Linux /proc), for load time measured the way users feel it."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


# ---- a fixed batch, plan by plan ---------------------------------------------------------------


def prefill_chunks(lengths: list[int], plans: dict[str, dict]) -> list[list[tuple[int, int, int]]]:
    """Split prompts into prefill steps of (seq, start, count) pieces that the largest prefill plan holds."""
    largest = max((p for p in plans.values() if p["kind"] == "prefill"), key=lambda p: p["num_tokens"], default=None)
    if largest is None:
        raise UserError("the bundle has no prefill plan; rebuild it")
    budget, max_seqs = largest["num_tokens"], min(largest["num_seqs"], largest["num_logits"])
    steps, step, left = [], [], budget
    for seq, length in enumerate(lengths):
        start = 0
        while start < length:
            count = min(length - start, left)
            step.append((seq, start, count))
            start, left = start + count, left - count
            if left == 0 or len(step) == max_seqs:
                steps.append(step)
                step, left = [], budget
    return steps + ([step] if step else [])


def step_batch(kind: str, pieces: list[tuple[list[int], int, list[int]]], block_size: int) -> StepBatch:
    """The engine's StepBatch for pieces of (new token ids, position of the first, block table), greedy,
    with a logits row at each piece's last token."""
    batch = StepBatch(kind)
    for tokens, start, table in pieces:
        batch.add_piece(tokens, start, table, block_size)
        batch.logit_rows.append(batch.add_row(len(batch.token_ids) - 1, GREEDY, 0, 0))
    return batch


GREEDY = SamplingParams(temperature=0.0)


class FixedBatch:
    """B prompts generating `output_len` tokens greedily, plan by plan, without a scheduler:
    sequence i owns KV blocks [i * n, (i + 1) * n)."""

    def __init__(self, backend, plans: dict[str, dict], manifest: dict, prompts: list[list[int]], output_len: int):
        self.backend, self.plans, self.prompts, self.output_len = backend, plans, prompts, output_len
        self.block_size = manifest["kv_cache"]["block_size"]
        B, longest = len(prompts), max(len(p) for p in prompts) + output_len
        top = max((p["num_seqs"] for p in plans.values() if p["kind"] == "decode"), default=0)
        if output_len > 1 and B > top:
            raise UserError(f"--batch-size {B} is larger than the bundle's largest decode bucket ({top}); "
                            "use a smaller batch or rebuild with a larger --max-batch-size")
        per_seq = -(-longest // self.block_size)
        room = max(p["max_blocks_per_seq"] for p in plans.values())
        if per_seq > room:
            raise UserError(f"--input-len + --output-len = {longest} tokens; the bundle holds at most "
                            f"{room * self.block_size} per sequence: use shorter lengths or rebuild with a larger --max-seq-len")
        if B * per_seq > backend.num_kv_blocks:
            raise UserError(f"{B} sequences of {longest} tokens need {B * per_seq} KV blocks; the backend has "
                            f"{backend.num_kv_blocks}: lower the batch size or lengths, or raise --gpu-memory-utilization")
        self.tables = [list(range(i * per_seq, (i + 1) * per_seq)) for i in range(B)]
        self.chunks = prefill_chunks([len(p) for p in prompts], plans)

    def _run(self, kind: str, pieces) -> np.ndarray:
        batch = step_batch(kind, pieces, self.block_size)
        plan = pick_plan(self.plans, batch)
        tokens, _ = self.backend.run(plan, fill_inputs(plan, batch), False)
        return tokens

    def prefill(self) -> list[int]:
        first = [0] * len(self.prompts)
        for step in self.chunks:
            tokens = self._run("prefill", [(self.prompts[s][start:start + n], start, self.tables[s]) for s, start, n in step])
            for row, (s, start, n) in enumerate(step):
                if start + n == len(self.prompts[s]):
                    first[s] = int(tokens[row])
        return first

    def decode(self, last: list[int], index: int) -> list[int]:
        """Decode step `index` (0-based): feeds each sequence's last token at position len(prompt) + index."""
        tokens = self._run("decode", [([tok], len(p) + index, table)
                                      for tok, p, table in zip(last, self.prompts, self.tables)])
        return [int(t) for t in tokens[:len(last)]]

    def generate(self, clock: Callable[[], float] = time.perf_counter) -> dict:
        """One timed generation: output token ids per sequence, latency, time to first token, step times."""
        t0 = clock()
        tokens = self.prefill()
        t_first = clock()
        outputs, steps = [[t] for t in tokens], []
        for i in range(self.output_len - 1):
            s = clock()
            tokens = self.decode(tokens, i)
            steps.append(clock() - s)
            for out, tok in zip(outputs, tokens):
                out.append(tok)
        return {"latency": clock() - t0, "ttft": t_first - t0, "steps": steps, "outputs": outputs}


# ---- the two modes ------------------------------------------------------------------------------


def random_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """Random token ids below min(vocab, 10000), as vLLM's benchmarks draw them."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, min(vocab, 10000), size=(n, length)).tolist()


def run_latency(backend, plans: dict[str, dict], manifest: dict, cfg: BenchConfig, *, weight_bytes: int,
                bandwidth: float | None, clock: Callable[[], float] = time.perf_counter) -> dict:
    prompts = random_prompts(cfg.batch_size, cfg.input_len, manifest["model"]["vocab_size"], cfg.seed)
    batch = FixedBatch(backend, plans, manifest, prompts, cfg.output_len)
    for _ in range(cfg.num_iters_warmup):
        batch.generate(clock)
    runs = [batch.generate(clock) for _ in range(cfg.num_iters)]
    return summarize_latency(runs, cfg, weight_bytes, bandwidth)


def summarize_latency(runs: list[dict], cfg: BenchConfig, weight_bytes: int, bandwidth: float | None) -> dict:
    latencies = [r["latency"] for r in runs]
    steps = [s for r in runs for s in r["steps"]]
    avg = float(np.mean(latencies))
    decode = float(np.median(steps)) if steps else None
    floor = floor_seconds(weight_bytes, bandwidth)
    return {
        "config": asdict(cfg), "avg_latency": avg, "latencies": latencies,
        "percentiles": {str(p): v for p, v in percentiles(latencies).items()},
        "ttft_median": float(np.median([r["ttft"] for r in runs])),
        "decode_step_median": decode, "decode_step_mean": float(np.mean(steps)) if steps else None,
        "decode_steps_timed": len(steps),
        "output_tokens_per_s": cfg.batch_size * cfg.output_len / avg,
        "weight_bytes": weight_bytes, "copy_bandwidth": bandwidth, "floor_step": floor,
        "decode_vs_floor": ratio(decode, floor),
    }


def run_throughput(generate: Callable[[list[list[int]], int], list[list[int]]], num_prompts: int, input_len: int,
                   output_len: int, vocab: int, seed: int = 0, clock: Callable[[], float] = time.perf_counter) -> dict:
    """`generate(prompts, max_tokens)` runs all requests through the engine; returns each one's output ids."""
    prompts = random_prompts(num_prompts, input_len, vocab, seed)
    t0 = clock()
    outputs = generate(prompts, output_len)
    elapsed = clock() - t0
    out_tokens = sum(len(o) for o in outputs)
    return {"num_prompts": num_prompts, "input_len": input_len, "output_len": output_len, "elapsed": elapsed,
            "requests_per_s": num_prompts / elapsed, "output_tokens_per_s": out_tokens / elapsed,
            "total_tokens_per_s": (num_prompts * input_len + out_tokens) / elapsed, "output_tokens": out_tokens}


def engine_generate(engine) -> Callable[[list[list[int]], int], list[list[int]]]:
    """The engine's offline API as `generate(prompts, max_tokens)`: greedy, exactly max_tokens new tokens each."""
    def generate(prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        return [c.token_ids for c in engine.generate(prompts, params)]

    return generate


# ---- output ---------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1e3:.3f} ms" if seconds >= 1e-5 else f"{seconds * 1e6:.3f} us"


def format_latency(result: dict) -> list[str]:
    lines = [f"Avg latency: {result['avg_latency']:.6f} seconds"]
    lines += [f"{p}% percentile latency: {v:.6f} seconds" for p, v in result["percentiles"].items()]
    lines.append(f"Time to first token (median): {_ms(result['ttft_median'])}")
    floor, bw = result["floor_step"], result["copy_bandwidth"]
    vs = "n/a (no floor on this device)" if floor is None else f"{result['decode_vs_floor']:.2f}x the floor"
    lines.append(f"Decode (median of {result['decode_steps_timed']} steps): {_ms(result['decode_step_median'])}/step, {vs}")
    if floor is not None:
        lines.append(f"Floor: {_ms(floor)}/step = {result['weight_bytes'] / 1e9:.4g} GB of weights / "
                     f"{bw / 1e12:.3f} TB/s device-to-device copy (measured now)")
    lines.append(f"Throughput: {result['output_tokens_per_s']:.1f} output tokens/s")
    return lines


def format_load(load: dict) -> str:
    up = load.get("process_to_ready_s")
    parts = [f"Load time: {up:.2f} s from process start to ready" if up is not None else "Load time: n/a"]
    if load.get("backend_open_s") is not None:
        parts.append(f"backend open {load['backend_open_s']:.2f} s")
    if load.get("kv_tokens") is not None:
        parts.append(f"KV cache {load['kv_tokens']} tokens")
    if load.get("num_graphs") is not None:
        parts.append(f"{load['num_graphs']} CUDA graphs")
    return "; ".join(parts)


def format_throughput(result: dict) -> list[str]:
    """The lines `vllm bench throughput` prints, then the run's shape."""
    return [
        f"Throughput: {result['requests_per_s']:.2f} requests/s, {result['total_tokens_per_s']:.2f} total tokens/s, "
        f"{result['output_tokens_per_s']:.2f} output tokens/s",
        f"Total num prompt tokens:  {result['num_prompts'] * result['input_len']}",
        f"Total num output tokens:  {result['output_tokens']}",
        f"({result['num_prompts']} requests of {result['input_len']} in / {result['output_len']} out in "
        f"{result['elapsed']:.3f} s, at most {result.get('max_concurrency', 'all')} at once)",
    ]


def open_backend(bundle, device: str, gpu_memory_utilization: float = 0.9):
    """The backend for `device` with `bundle` loaded (the engine's, so bench measures what `llmc run` runs)."""
    from llmc.runtime.engine import open_backend as engine_open_backend

    return engine_open_backend(bundle, device, gpu_memory_utilization=gpu_memory_utilization)
