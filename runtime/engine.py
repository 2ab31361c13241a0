"""The engine: requests in, tokens out, over one backend and the bundle's static plans.

Each `step()` asks the scheduler for a prefill or a decode batch, fills the smallest plan whose
bucket holds it (padding the rest), runs it on the backend, and hands the sampled tokens back
to the scheduler. Everything here is plain Python over ints and numpy arrays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.errors import BundleError, UserError

from .batch import StepBatch, fill_inputs, pick_plan
from .block_manager import BlockManager
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence
from .stop import StopChecker
from .tokenizer import Tokenizer

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    num_prompt_tokens: int
    num_output_tokens: int


@dataclass(frozen=True)
class Completion:
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None


def open_backend(bundle, device: str, **options):
    if device == "cpu":
        from .backends.cpu import CpuBackend

        return CpuBackend.open(bundle, **options)
    if device == "cuda":
        from .backends.cuda import CudaBackend

        return CudaBackend.open(bundle, **options)
    raise UserError(f"--device {device!r} is not supported; choose one of cpu, cuda")


class Engine:
    def __init__(self, bundle, backend, max_num_seqs: int | None = None):
        self.bundle, self.backend = bundle, backend
        manifest = bundle.manifest
        build = manifest["build"]
        self.max_model_len = build["max_seq_len"]
        self.max_num_seqs = min(max_num_seqs or build["max_batch_size"], build["max_batch_size"])
        self.plans = {name: bundle.plan(name) for name in bundle.plans()}
        self.tokenizer = Tokenizer(bundle.path / "tokenizer")
        self.block_manager = BlockManager(backend.num_kv_blocks, manifest["kv_cache"]["block_size"])
        self.scheduler = Scheduler(
            self.block_manager, self.max_num_seqs, build["max_num_batched_tokens"], self.max_model_len,
            eos_token_ids=frozenset(manifest["model"]["eos_token_ids"]),
        )
        self.vocab_size = manifest["model"]["vocab_size"]
        self._ids = itertools.count()
        self._seeds = np.random.default_rng(0)
        self._stops: dict[int, StopChecker] = {}
        self._by_request: dict[str, Sequence] = {}

    @classmethod
    def load(cls, path, device: str = "cpu", *, max_num_seqs: int | None = None, verify: str = "full", **backend_options) -> "Engine":
        """Open, check and load a bundle. `device="auto"` picks the bundle's own backend. The cheap
        checks (sizes, format, the GPU's architecture) come before hashing a large bundle."""
        from llmc.artifacts import Bundle

        if device not in DEVICES:
            raise UserError(f"--device {device!r} is not supported; choose one of {', '.join(DEVICES)}")
        bundle = Bundle.open(path, verify="none" if verify == "none" else "fast")
        try:
            if device == "auto":
                device = bundle.manifest["target"]["backend"]
            if device == "cuda":
                from .backends.cuda import check_device

                check_device(bundle.manifest)
            if verify == "full":
                first = next(iter(bundle.check(full=True).mismatches), None)
                if first is not None:
                    raise BundleError(f"{bundle.label}: {first.message}")
            return cls(bundle, open_backend(bundle, device, **backend_options), max_num_seqs)
        except BaseException:
            bundle.close()
            raise

    @property
    def model_name(self) -> str:
        return Path(str(self.bundle.source)).name.removesuffix(".tar") or self.bundle.manifest["model"]["architecture"]

    # -- requests ---------------------------------------------------------------------------------

    def _prompt_ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt)
        elif isinstance(prompt, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            ids = list(prompt)
        else:
            raise UserError("prompt must be a string or a list of token ids")
        if not ids:
            raise UserError("prompt is empty; give at least one token")
        bad = [t for t in ids if not 0 <= t < self.vocab_size]
        if bad:
            raise UserError(f"prompt token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        if len(ids) >= self.max_model_len:
            raise UserError(
                f"prompt has {len(ids)} tokens; this bundle's context is {self.max_model_len} tokens "
                f"(--max-seq-len at build): shorten the prompt or rebuild with a larger --max-seq-len"
            )
        return ids

    def add_request(self, request_id: str, prompt, params: SamplingParams) -> None:
        if request_id in self._by_request:
            raise UserError(f"request id {request_id!r} is already in use")
        ids = self._prompt_ids(prompt)
        seq_id = next(self._ids)
        seed = params.seed if params.seed is not None else int(self._seeds.integers(2**63))
        seq = Sequence(seq_id, request_id, ids, params, seed=seed)
        self.scheduler.check_admissible(seq)
        self._stops[seq_id] = StopChecker(self.tokenizer.decode, params.stop, ids)
        self._by_request[request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        seq = self.scheduler.abort(request_id)
        if seq is not None:
            self._forget(seq)

    def _forget(self, seq: Sequence) -> None:
        self._stops.pop(seq.seq_id, None)
        self._by_request.pop(seq.request_id, None)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished

    def stats(self) -> dict:
        return {
            "num_running": self.scheduler.num_running, "num_waiting": self.scheduler.num_waiting,
            "kv_blocks_used": self.block_manager.num_used_blocks, "kv_blocks_total": self.block_manager.num_blocks,
        }

    # -- one step ---------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        out = self.scheduler.schedule()
        if out is None:
            return []
        batch = StepBatch.from_schedule(out, self.block_manager)
        plan = pick_plan(self.plans, batch)
        inputs = fill_inputs(plan, batch)
        tokens, _ = self.backend.run(plan, inputs, want_logits=False)
        sampled = [int(tokens[row]) if row is not None else None for row in batch.logit_rows]
        finished = self.scheduler.postprocess(
            out, sampled, stop_check=lambda s: self._stops[s.seq_id].append(s.output_token_ids[-1])
        )
        results = []
        done = {s.seq_id for s in finished}
        for seq, token in zip(out.seqs, sampled):
            if token is None and seq.seq_id not in done:
                continue
            stops = self._stops[seq.seq_id]
            results.append(RequestOutput(
                seq.request_id, [token] if token is not None else [], stops.delta(finished=seq.is_finished),
                seq.is_finished, seq.finish_reason, seq.num_prompt_tokens, len(seq.output_token_ids),
            ))
            if seq.is_finished:
                self._forget(seq)
        return results

    # -- offline API ------------------------------------------------------------------------------

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None) -> list[Completion]:
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise UserError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        base = next(self._ids)
        ids = [f"generate-{base}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, params_list):
            self.add_request(rid, prompt, p)
        seqs = {rid: self._by_request[rid] for rid in ids}
        texts = {rid: "" for rid in ids}
        while any(not s.is_finished for s in seqs.values()):
            for o in self.step():
                if o.request_id in texts:
                    texts[o.request_id] += o.new_text
        return [Completion(rid, s.prompt_token_ids, list(s.output_token_ids), texts[rid], s.finish_reason) for rid, s in seqs.items()]

    def score(self, token_ids: list[int]) -> np.ndarray:
        """float32 logits [len(token_ids), vocab]: row i predicts the token after position i."""
        ids = self._prompt_ids(list(token_ids))
        seq = Sequence(next(self._ids), "score", ids, SamplingParams(max_tokens=1, temperature=0.0), seed=0)
        if not self.block_manager.can_allocate(seq, len(ids)):
            raise UserError("not enough free KV blocks to score this sequence now; wait for running requests")
        self.block_manager.allocate(seq, len(ids))
        try:
            rows = []
            chunk = max(p["num_logits"] for p in self.plans.values() if p["kind"] == "prefill")
            for start in range(0, len(ids), chunk):
                n = min(chunk, len(ids) - start)
                batch = StepBatch.for_chunk(seq, start, n, self.block_manager)
                plan = pick_plan(self.plans, batch)
                _, logits = self.backend.run(plan, fill_inputs(plan, batch), want_logits=True)
                rows.append(logits[:n])
            return np.concatenate(rows).astype(np.float32)
        finally:
            self.block_manager.free(seq)

    def close(self) -> None:
        self.backend.close()
