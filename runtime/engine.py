"""The engine: requests in, outputs out, over one backend and the bundle's static plans.

Each `step()` asks the Scheduler for a step, the ModelRunner launches it, and the tokens it
samples go back to the Scheduler (token stops) and the OutputProcessor (text, stop strings).
With `overlap` (the default) the next step is scheduled and launched before the previous one's
tokens are read, so the host works while the device runs; a step's outputs then come back from
the following `step()` call. Outputs are the same either way.

A step that fails fails only the requests that caused it (or, when the backend itself fails,
the requests in that step): they finish with reason "error" and the engine goes on.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.errors import BundleError, UserError

from .block_manager import BlockManager
from .logprobs import TokenLogprob, prompt_logprobs
from .output_processor import OutputProcessor, RequestOutput
from .runner import Launch, ModelRunner
from .sampler import RowError, Sampler
from .sampling_params import SamplingParams
from .scheduler import Scheduler, SchedulerOutput
from .sequence import Sequence
from .tensor_parallel import RankFailed, open_ranks, tensor_parallel_size
from .tokenizer import Tokenizer

DEVICES = ("auto", "cpu", "cuda", "hip")
log = logging.getLogger(__name__)

__all__ = ["Completion", "Engine", "RequestOutput", "open_backend"]


@dataclass(frozen=True)
class Completion:
    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    index: int = 0  # the sample, for requests with n > 1
    logprobs: list[TokenLogprob] | None = None  # per output token, when SamplingParams.logprobs is set
    prompt_logprobs: list[TokenLogprob | None] | None = None  # per prompt token (None for the first)


def backend_class(device: str):
    """The backend class for --device (imported only when asked for: cuda needs cuda-python, hip hip-python)."""
    if device == "cpu":
        from .backends.cpu import CpuBackend

        return CpuBackend
    if device == "cuda":
        from .backends.cuda import CudaBackend

        return CudaBackend
    if device == "hip":
        from .backends.hip import HipBackend

        return HipBackend
    raise UserError(f"--device {device!r} is not supported; choose one of cpu, cuda, hip")


def open_backend(bundle, device: str, **options):
    """The bundle's backend; for a tensor-parallel bundle, rank 0's, with ranks 1..N-1 in processes of their own."""
    if tensor_parallel_size(bundle.manifest) > 1:
        return open_ranks(bundle, device, backend_class(device), **options)
    return backend_class(device).open(bundle, **options)


class Engine:
    def __init__(self, bundle, backend, max_num_seqs: int | None = None, overlap: bool = True,
                 enable_prefix_caching: bool = True):
        self.bundle, self.backend, self.overlap = bundle, backend, overlap
        manifest = bundle.manifest
        build = manifest["build"]
        self.max_model_len = build["max_seq_len"]
        self.max_num_seqs = min(max_num_seqs or build["max_batch_size"], build["max_batch_size"])
        self.tokenizer = Tokenizer(bundle.path / "tokenizer")
        self.vocab_size = manifest["model"]["vocab_size"]
        block_size = manifest["kv_cache"]["block_size"]
        self.block_manager = BlockManager(backend.num_kv_blocks, block_size, enable_prefix_caching)
        self.scheduler = Scheduler(
            self.block_manager, self.max_num_seqs, build["max_num_batched_tokens"], self.max_model_len,
            eos_token_ids=frozenset(manifest["model"]["eos_token_ids"]),
        )
        plans = {name: bundle.plan(name) for name in bundle.plans()}
        self.scheduler.max_num_logits = max((p["num_logits"] for p in plans.values() if p["kind"] == "prefill"),
                                            default=None)
        self._has_logprobs = all("token_logprobs" in p.get("outputs", ()) for p in plans.values())
        self.sampler = Sampler(self.vocab_size, manifest["model"]["eos_token_ids"])
        self.runner = ModelRunner(backend, plans, block_size, self.sampler)
        self._grammars = None  # GrammarCompiler, made for the first request with structured output
        self.outputs = OutputProcessor(self.tokenizer.decode)
        self._ids = itertools.count()
        self._seeds = np.random.default_rng(0)
        self._by_request: dict[str, list[Sequence]] = {}  # a request's samples
        self._inflight: tuple[SchedulerOutput, Launch] | None = None
        self._ready: list[RequestOutput] = []  # outputs read early (a drain), returned by the next step

    @classmethod
    def load(cls, path, device: str = "cpu", *, max_num_seqs: int | None = None, verify: str = "full",
             overlap: bool = True, enable_prefix_caching: bool = True, **backend_options) -> "Engine":
        """Open, check and load a bundle. `device="auto"` picks the bundle's own backend. The cheap
        checks (sizes, format, the GPU's architecture) come before hashing a large bundle.
        `enable_prefix_caching=False` (`--no-prefix-caching`) computes every prompt in full."""
        from llmc.artifacts import Bundle

        if device not in DEVICES:
            raise UserError(f"--device {device!r} is not supported; choose one of {', '.join(DEVICES)}")
        bundle = Bundle.open(path, verify="none" if verify == "none" else "fast")
        try:
            if device == "auto":
                device = bundle.manifest["target"]["backend"]
            if device in ("cuda", "hip"):
                backend_class(device).check_device(bundle.manifest)
            if verify == "full":
                first = next(iter(bundle.check(full=True).mismatches), None)
                if first is not None:
                    raise BundleError(f"{bundle.label}: {first.message}")
            return cls(bundle, open_backend(bundle, device, **backend_options), max_num_seqs, overlap,
                       enable_prefix_caching)
        except BaseException:
            bundle.close()
            raise

    @property
    def model_name(self) -> str:
        return Path(str(self.bundle.source)).name.removesuffix(".tar") or self.bundle.manifest["model"]["architecture"]

    @property
    def device_name(self) -> str:
        return self.backend.name

    @property
    def load_summary(self) -> dict:
        return dict(getattr(self.backend, "load_summary", {}))

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
        """Queue a request; with `params.n` > 1 its samples share the prompt's KV blocks, sample i
        draws with seed (seed + i) mod 2**63, and outputs say which sample they belong to (`index`)."""
        if request_id in self._by_request:
            raise UserError(f"request id {request_id!r} is already in use")
        ids = self._prompt_ids(prompt)
        if (params.logprobs is not None or params.prompt_logprobs is not None) and not self._has_logprobs:
            raise UserError("this bundle's plans return no log probabilities: rebuild it with this llmc for logprobs")
        self._check_logit_bias(params)
        matcher = self._matcher(params)
        seed = params.seed if params.seed is not None else int(self._seeds.integers(2**63))
        first = Sequence(next(self._ids), request_id, ids, params, seed=seed)
        self.scheduler.check_admissible(first)
        seqs = [first] + [Sequence(next(self._ids), request_id, ids, params, seed=(seed + i) % 2**63, index=i,
                                   parent=first) for i in range(1, params.n)]
        self._by_request[request_id] = seqs
        for seq in seqs:
            if matcher is not None:
                self.sampler.constrain(seq, matcher if seq is first else matcher.copy())
            self.outputs.add(seq)
            self.scheduler.add(seq)

    def _check_logit_bias(self, params: SamplingParams) -> None:
        bad = [token for token, _ in params.logit_bias if token >= self.vocab_size]
        if bad:
            raise UserError(f"logit_bias token id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")

    def _matcher(self, params: SamplingParams):
        """The compiled grammar of the request's structured output, or None."""
        if params.structured_output is None:
            return None
        if self._grammars is None:
            from .structured_output import GrammarCompiler

            path = self.bundle.path / "tokenizer" / "tokenizer.json"
            if not path.is_file():
                raise UserError("structured output needs the bundle's tokenizer.json, which this bundle lacks")
            self._grammars = GrammarCompiler(path.read_text(), self.vocab_size,
                                             tuple(self.bundle.manifest["model"]["eos_token_ids"]))
        return self._grammars.matcher(params.structured_output)

    def abort(self, request_id: str) -> None:
        for seq in self._by_request.pop(request_id, []):
            if not seq.is_finished:
                self.scheduler.finish(seq, "abort")
            self.outputs.remove(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished or self._inflight is not None or bool(self._ready)

    def stats(self) -> dict:
        """Gauges now, and cumulative counters (prefix cache queries and hits in tokens, as vLLM counts them)."""
        bm = self.block_manager
        return {
            "num_running": self.scheduler.num_running, "num_waiting": self.scheduler.num_waiting,
            "kv_blocks_used": bm.num_used_blocks, "kv_blocks_total": bm.num_blocks, "kv_cache_usage": bm.usage,
            "num_preemptions": self.scheduler.num_preemptions,
            "prefix_cache_queries": bm.prefix_cache_queries, "prefix_cache_hits": bm.prefix_cache_hits,
        }

    # -- one step ---------------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        if self._inflight is not None and any(s.params.reads_output_tokens for s in self.scheduler.running):
            self._drain()  # penalties and grammars need the tokens in flight: no overlap while they run
        results, self._ready = self._ready, []
        out = self.scheduler.schedule()
        launched = self._launch(out, results) if out is not None else None
        if self.overlap:
            if self._inflight is not None:
                results += self._finish_step(*self._inflight)
            self._inflight = launched
        elif launched is not None:
            results += self._finish_step(*launched)
        return results

    def _launch(self, out: SchedulerOutput, results: list) -> tuple[SchedulerOutput, Launch] | None:
        try:
            return out, self.runner.launch(out)
        except RankFailed:  # the ranks are gone: nothing can run any more
            raise
        except RowError as e:  # fail the culprits; the others run next step
            self._unschedule(out)
            for seq in e.seqs:
                results.append(self._fail(seq, str(e)))
        except Exception as e:
            log.exception("launching a step of %d requests failed", len(out.seqs))
            self._unschedule(out)
            for seq in out.seqs:
                results.append(self._fail(seq, f"{type(e).__name__}: {e}"))
        return None

    def _unschedule(self, out: SchedulerOutput) -> None:
        """Undo `out` (never launched): its sequences run again from where they were."""
        for seq, start, index in zip(out.seqs, out.starts, out.sample_indices):
            if not seq.is_finished:
                seq.num_computed_tokens = start
                if index >= 0:
                    seq.output_token_ids.pop()

    def _fail(self, seq: Sequence, message: str) -> RequestOutput:
        self.scheduler.finish(seq, "error")
        self._forget(seq)
        self.outputs.remove(seq)
        return RequestOutput(seq.request_id, [], "", True, "error", seq.num_prompt_tokens, len(seq.output_token_ids),
                             message, seq.index)

    def _forget(self, seq: Sequence) -> None:
        """Drop a finished sample's request once all its samples have finished."""
        seqs = self._by_request.get(seq.request_id)
        if seqs is not None and seq in seqs and all(s.is_finished for s in seqs):
            del self._by_request[seq.request_id]

    def _finish_step(self, out: SchedulerOutput, launch: Launch) -> list[RequestOutput]:
        try:
            tokens = self.runner.wait(launch)
        except RankFailed:
            raise
        except Exception as e:
            log.exception("a step of %d requests failed on the device", len(out.seqs))
            return [self._fail(seq, f"{type(e).__name__}: {e}") for seq in out.seqs if not seq.is_finished]
        stopped = set(map(id, self.scheduler.postprocess(out, tokens)))
        for seq in out.seqs:
            seq.prompt_logprobs += launch.prompt_logprobs.get(seq.seq_id, ())
        results = []
        for seq, token, index in zip(out.seqs, tokens, out.sample_indices):
            if token is None or (seq.is_finished and id(seq) not in stopped):
                continue  # no sample, or the request ended while this step ran
            broken = self.sampler.accept(seq, token)
            if broken is not None:
                results.append(self._fail(seq, broken))
                continue
            try:
                if self.outputs.append(seq, token):
                    self.scheduler.finish(seq, "stop")
                logprob = launch.logprobs.get(seq.seq_id)
                if logprob is not None:
                    seq.logprobs.append(logprob)
                results.append(self.outputs.output(seq, [token], index + 1, logprob=logprob))
            except Exception as e:  # detokenizing this request failed: fail it alone
                log.exception("output processing of request %s failed", seq.request_id)
                results.append(self._fail(seq, f"{type(e).__name__}: {e}"))
                continue
            if seq.is_finished:
                self._forget(seq)
        return results

    def _drain(self) -> None:
        """Read the step in flight now (its outputs come with the next `step()`)."""
        if self._inflight is not None:
            inflight, self._inflight = self._inflight, None
            self._ready += self._finish_step(*inflight)

    # -- offline API ------------------------------------------------------------------------------

    def generate(self, prompts, params: SamplingParams | list[SamplingParams] | None = None) -> list[Completion]:
        """One Completion per prompt, or per sample (prompt-major, by `index`) for params with n > 1."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params_list = params if isinstance(params, list) else [params or SamplingParams()] * len(prompts)
        if len(params_list) != len(prompts):
            raise UserError(f"{len(prompts)} prompts but {len(params_list)} sampling params")
        base = next(self._ids)
        ids = [f"generate-{base}-{i}" for i in range(len(prompts))]
        for rid, prompt, p in zip(ids, prompts, params_list):
            self.add_request(rid, prompt, p)
        seqs = [s for rid in ids for s in self._by_request[rid]]
        texts = {(s.request_id, s.index): "" for s in seqs}
        errors = {}
        while any(not s.is_finished for s in seqs) or self._inflight is not None:
            for o in self.step():
                if (o.request_id, o.index) in texts:
                    texts[o.request_id, o.index] += o.new_text
                    if o.error:
                        errors[o.request_id] = o.error
        if errors:
            for rid in ids:
                self.abort(rid)
            rid, message = next(iter(errors.items()))
            raise UserError(f"request {rid} failed: {message}")
        return [Completion(s.request_id, s.prompt_token_ids, list(s.output_token_ids), texts[s.request_id, s.index],
                           s.finish_reason, s.index, s.logprobs if s.params.logprobs is not None else None,
                           prompt_logprobs(s)) for s in seqs]

    def score(self, token_ids: list[int]) -> np.ndarray:
        """float32 logits [len(token_ids), vocab]: row i predicts the token after position i."""
        ids = self._prompt_ids(list(token_ids))
        self._drain()
        seq = Sequence(next(self._ids), "score", ids, SamplingParams(max_tokens=1, temperature=0.0), seed=0)
        self.scheduler.hold(seq, len(ids))
        try:
            return self.runner.logits(seq, 0, len(ids)).astype(np.float32)
        finally:
            self.scheduler.release(seq)

    def close(self) -> None:
        self.backend.close()
