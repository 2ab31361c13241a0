"""Continuous batching: which sequences run in the next step, and with how many tokens.

A step is either a prefill step or a decode step. Prefill comes first: running sequences
whose prompt is not fully computed get their next chunk, then waiting sequences are admitted
in FIFO order while the token budget, `max_num_seqs` and the KV pool allow. A sequence gets
the blocks for its whole prefill when it is admitted, so later chunks never wait for blocks.
With no prefill work, every running sequence decodes one token. When KV blocks run out, the
most recently admitted running sequence is preempted: its blocks are freed and it goes back
to the front of the waiting queue, to be recomputed from its tokens so far.

Every prefill step computes prompt tokens and every decode step computes a token of the
oldest running sequence, so the work always progresses, provided each request fits in the
pool alone (`check_admissible`).
"""

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from llmc.errors import UserError
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.sequence import Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    is_prefill: bool
    seqs: list[Sequence]
    num_new_tokens: list[int]  # tokens computed this step, from seq.num_computed_tokens on
    samples: list[bool]  # whether the step ends at the sequence's last token and samples the next

    @property
    def num_batched_tokens(self) -> int:
        return sum(self.num_new_tokens)


class Scheduler:
    def __init__(
        self,
        block_manager: BlockManager,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        max_model_len: int,
        eos_token_ids: set[int] = frozenset(),
    ):
        if max_num_seqs < 1:
            raise UserError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        if max_num_batched_tokens < max_num_seqs:
            raise UserError(
                f"max_num_batched_tokens must be >= max_num_seqs ({max_num_seqs}), got {max_num_batched_tokens}"
            )
        if max_model_len < 2:
            raise UserError(f"max_model_len must be >= 2, got {max_model_len}")
        self.block_manager = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_model_len = max_model_len
        self.eos_token_ids = frozenset(eos_token_ids)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.num_preemptions = 0

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def max_kv_tokens(self, seq: Sequence) -> int:
        """The most tokens `seq` ever holds in the cache: the last sampled token is never computed."""
        return min(seq.num_prompt_tokens + seq.params.max_tokens, self.max_model_len) - 1

    def can_ever_fit(self, num_tokens: int) -> bool:
        return self.block_manager.blocks_needed(num_tokens) <= self.block_manager.num_blocks

    def check_admissible(self, seq: Sequence) -> None:
        """Raise UserError for a request that could never run; the engine calls this before `add`."""
        if seq.num_prompt_tokens == 0:
            raise UserError(f"request {seq.request_id}: the prompt is empty")
        if seq.num_prompt_tokens >= self.max_model_len:
            raise UserError(
                f"request {seq.request_id}: the prompt has {seq.num_prompt_tokens} tokens; "
                f"max_model_len is {self.max_model_len}, which leaves no room for output"
            )
        if not self.can_ever_fit(self.max_kv_tokens(seq)):
            needed = self.block_manager.blocks_needed(self.max_kv_tokens(seq))
            raise UserError(
                f"request {seq.request_id} needs {needed} KV blocks; the pool has {self.block_manager.num_blocks}"
            )

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        self.waiting.append(seq)

    def abort(self, request_id: str) -> Sequence | None:
        for seq in [*self.waiting, *self.running]:
            if seq.request_id == request_id:
                if seq.status == SequenceStatus.WAITING:
                    self.waiting.remove(seq)
                self._finish(seq, "abort")
                return seq
        return None

    def schedule(self) -> SchedulerOutput | None:
        return self._schedule_prefill() or self._schedule_decode()

    def _schedule_prefill(self) -> SchedulerOutput | None:
        out = SchedulerOutput(is_prefill=True, seqs=[], num_new_tokens=[], samples=[])
        budget = self.max_num_batched_tokens
        for seq in self.running:
            if budget == 0:
                break
            if self._is_prefilling(seq):
                num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
                budget -= num_new
                self._add_to(out, seq, num_new)
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if not self.block_manager.can_allocate(seq, seq.num_tokens):
                break
            self.waiting.popleft()
            self.block_manager.allocate(seq, seq.num_tokens)
            num_new = min(seq.num_tokens, budget)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            budget -= num_new
            self._add_to(out, seq, num_new)
        return out if out.seqs else None

    def _schedule_decode(self) -> SchedulerOutput | None:
        out = SchedulerOutput(is_prefill=False, seqs=[], num_new_tokens=[], samples=[])
        for seq in list(self.running):
            if seq.status == SequenceStatus.RUNNING and self._make_room(seq, 1):
                self._add_to(out, seq, 1)
        return out if out.seqs else None

    @staticmethod
    def _is_prefilling(seq: Sequence) -> bool:
        # A last prefill chunk of one token runs in a decode step: it computes the same thing.
        return seq.num_computed_tokens == 0 or seq.num_tokens - seq.num_computed_tokens > 1

    def _make_room(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Allocate blocks for `seq`, preempting the most recent running sequences as needed.

        Returns False when `seq` itself had to be preempted.
        """
        while not self.block_manager.can_allocate(seq, num_new_tokens):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        self.block_manager.allocate(seq, num_new_tokens)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.block_manager.free(seq)
        seq.num_computed_tokens = 0
        seq.status = SequenceStatus.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    @staticmethod
    def _add_to(out: SchedulerOutput, seq: Sequence, num_new: int) -> None:
        out.seqs.append(seq)
        out.num_new_tokens.append(num_new)
        out.samples.append(seq.num_computed_tokens + num_new == seq.num_tokens)

    def postprocess(
        self,
        out: SchedulerOutput,
        token_ids: list[int | None],
        stop_check: Callable[[Sequence], bool] | None = None,
    ) -> list[Sequence]:
        """Record a step's results and finish the sequences that stopped; returns those.

        `token_ids[i]` is the token sampled for `out.seqs[i]` (None where it did not sample).
        `stop_check(seq)`, called after a token is appended, reports a text-level stop (stop strings).
        """
        finished = []
        for seq, num_new, samples, token_id in zip(out.seqs, out.num_new_tokens, out.samples, token_ids, strict=True):
            if seq.is_finished:  # aborted while the step ran
                continue
            seq.num_computed_tokens += num_new
            if not samples:
                continue
            seq.output_token_ids.append(token_id)
            reason = self._stop_reason(seq, token_id, stop_check)
            if reason is not None:
                self._finish(seq, reason)
                finished.append(seq)
        return finished

    def _stop_reason(self, seq: Sequence, token_id: int, stop_check) -> str | None:
        params = seq.params
        if token_id in params.stop_token_ids or (not params.ignore_eos and token_id in self.eos_token_ids):
            return "stop"
        if stop_check is not None and stop_check(seq):
            return "stop"
        if len(seq.output_token_ids) >= params.max_tokens or seq.num_tokens >= self.max_model_len:
            return "length"
        return None

    def _finish(self, seq: Sequence, reason: str) -> None:
        if seq in self.running:
            self.running.remove(seq)
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
