"""A bundle-shaped stand-in and a backend whose 'model' reads a paged KV pool, for engine tests
without a device: a wrong slot, block table, position or fed-back token changes the outputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

EOS = 1
VOCAB = 50


def fake_plans(max_batch: int, max_tokens: int, max_blocks: int) -> dict[str, dict]:
    def plan(name, kind, t, b, r):
        shapes = {"input_ids": [t], "positions": [t], "slot_mapping": [t], "block_tables": [b, max_blocks],
                  "seq_lens": [b], "query_start_loc": [b + 1], "logits_indices": [r], "temperature": [r],
                  "top_k": [r], "top_p": [r], "uniform": [r]}
        floats = ("temperature", "top_p", "uniform")
        inputs = {k: {"shape": s, "dtype": "float32" if k in floats else "int32"} for k, s in shapes.items()}
        return {"name": name, "kind": kind, "num_tokens": t, "num_seqs": b, "num_logits": r,
                "max_blocks_per_seq": max_blocks, "inputs": inputs}

    plans, b = {}, 1
    while True:
        b = min(b, max_batch)
        plans[f"decode_b{b}"] = plan(f"decode_b{b}", "decode", b, b, b)
        if b == max_batch:
            break
        b *= 2
    t = 8
    while True:
        t = min(t, max_tokens)
        plans[f"prefill_t{t}"] = plan(f"prefill_t{t}", "prefill", t, max_batch, min(t, max_batch))
        if t == max_tokens:
            break
        t *= 2
    return plans


def fake_bundle(max_batch=8, max_tokens=32, max_seq_len=64, block_size=4, path: Path | None = None):
    max_blocks = -(-max_seq_len // block_size)
    plans = fake_plans(max_batch, max_tokens, max_blocks)
    manifest = {
        "build": {"max_seq_len": max_seq_len, "max_batch_size": max_batch, "max_num_batched_tokens": max_tokens},
        "kv_cache": {"block_size": block_size},
        "model": {"vocab_size": VOCAB, "eos_token_ids": [EOS], "architecture": "Fake"},
    }
    return SimpleNamespace(manifest=manifest, plans=lambda: list(plans), plan=plans.__getitem__,
                           path=path or Path("/nonexistent"), source="fake")


def next_token(history: list[int], uniform: float, temperature: float) -> int:
    h = 0
    for i, t in enumerate(history):
        h = (h * 31 + (i + 1) * t) % 1_000_003
    if temperature > 0:
        h += int(uniform * 997)
    return h % VOCAB


class FakeModelBackend:
    """The runner's protocol over numpy: K 'cache' holds (token, position) per slot."""

    name = "fake"

    def __init__(self, bundle, num_kv_blocks: int):
        self.num_kv_blocks = num_kv_blocks
        self.block_size = bundle.manifest["kv_cache"]["block_size"]
        self.kv = np.full((num_kv_blocks * self.block_size, 2), -1, dtype=np.int64)
        self.plans = {name: bundle.plan(name) for name in bundle.plans()}
        self._inputs: dict[str, dict[str, np.ndarray]] = {}
        self._last = np.zeros(0, dtype=np.int32)
        self.launches: list[tuple[str, list]] = []
        self.load_summary = {}

    def inputs(self, name):
        if name not in self._inputs:
            pads = {"slot_mapping": -1, "top_p": 1.0}
            self._inputs[name] = {k: np.full(s["shape"], pads.get(k, 0), dtype=s["dtype"])
                                  for k, s in self.plans[name]["inputs"].items()}
        return self._inputs[name]

    def launch(self, name, feed, want_logits):
        v = self.inputs(name)
        for dst, src in feed:
            v["input_ids"][dst] = self._last[src]
        self.launches.append((name, list(feed)))
        assert v["input_ids"].min() >= 0
        for t, slot in enumerate(v["slot_mapping"]):
            if slot >= 0:
                self.kv[slot] = (v["input_ids"][t], v["positions"][t])
        qsl = v["query_start_loc"]
        r = len(v["logits_indices"])
        tokens = np.zeros(r, dtype=np.int32)
        logits = np.zeros((r, VOCAB), dtype=np.float32)
        for row, index in enumerate(v["logits_indices"]):
            seq = int(np.searchsorted(qsl, index, side="right")) - 1
            n = int(v["seq_lens"][seq])
            if n == 0:
                continue
            table = v["block_tables"][seq]
            slots = [table[p // self.block_size] * self.block_size + p % self.block_size for p in range(n)]
            assert [int(self.kv[s][1]) for s in slots] == list(range(n)), "the cache holds the wrong positions"
            history = [int(self.kv[s][0]) for s in slots]
            tokens[row] = next_token(history, float(v["uniform"][row]), float(v["temperature"][row]))
            logits[row, tokens[row]] = 1.0
        self._last = tokens
        return tokens, logits if want_logits else None

    def wait(self, handle):
        return handle

    def close(self):
        pass


def drive(engine, requests) -> dict:
    """requests: (step it arrives at, id, prompt, params); returns per (id, sample) tokens, text, reason."""
    results = {}
    step = 0
    while step < 10_000:
        for arrival, rid, prompt, params in requests:
            if arrival == step:
                engine.add_request(rid, prompt, params)
        if step > max(r[0] for r in requests) and not engine.has_unfinished():
            break
        for out in engine.step():
            r = results.setdefault((out.request_id, out.index), {"tokens": [], "text": "", "reason": None})
            r["tokens"] += out.new_token_ids
            r["text"] += out.new_text
            assert out.num_output_tokens == len(r["tokens"])
            if out.finished:
                r["reason"] = out.finish_reason
        step += 1
    bm = engine.block_manager
    assert bm.num_used_blocks == 0 and not any(bm.ref_counts)
    return results
