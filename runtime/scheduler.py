"""Continuous batching: which sequences run in the next step, and with how many tokens.

Each step takes the running sequences in admission order, within a token budget: a decoding
sequence computes its one new token, a prefilling one its next chunk (chunked prefill mixed
with decode in one step); then, unless a preemption showed that blocks are short, waiting
sequences are admitted in FIFO order while the budget, `max_num_seqs` and the KV pool allow.
A sequence gets the blocks for its whole prefill when it is admitted, so later chunks never
wait for blocks; the full blocks of its longest written prefix are shared instead (from the
prefix cache, or from the first sample of its request) and its computation starts after them.
A step with a chunk of more than one token is a prefill step (it runs on a prefill plan, whose
rows hold decodes too); otherwise a decode step. When KV blocks run out, the most recently
admitted running sequence is preempted: its blocks are freed and it goes back to the front of
the waiting queue, to be recomputed from its tokens so far (from its cached blocks on).

Scheduling a step advances each sequence's `num_computed_tokens` and appends a `PENDING`
token for each sample it will draw, so the next step can be scheduled before this one's
tokens are known (overlap); `postprocess` fills them in, finishes the sequences that stop and
marks the blocks the step filled as written (only then can they be shared: a block whose KV a
step in flight writes, or whose last token is still pending, is never found in the cache).
A sequence whose pending token reaches its length limit is not scheduled again.

Every step computes tokens of the oldest running sequence (or admits the first waiting one),
so the work always progresses, provided each request fits in the pool alone (`check_admissible`).
"""

from collections import deque
from dataclasses import dataclass, field

from llmc.errors import UserError
from llmc.runtime.block_manager import BlockManager
from llmc.runtime.sequence import PENDING, Sequence, SequenceStatus


@dataclass
class SchedulerOutput:
    is_prefill: bool
    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)  # tokens computed this step
    starts: list[int] = field(default_factory=list)  # position of each sequence's first new token
    samples: list[bool] = field(default_factory=list)  # whether the step samples the sequence's next token
    sample_indices: list[int] = field(default_factory=list)  # index in output_token_ids it fills, or -1
    num_logits: int = 0  # logits rows: one per sample, one per prompt position whose logprob is asked for

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
        max_num_logits: int | None = None,
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
        self.max_num_logits = max_num_logits  # logits rows a step can have (the largest plan's)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.held: list[Sequence] = []  # blocks lent outside batching (scoring)
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
        """Abort every sample of the request; returns the first, or None if none is unfinished."""
        seqs = [seq for seq in [*self.waiting, *self.running] if seq.request_id == request_id]
        for seq in seqs:
            self.finish(seq, "abort")
        return min(seqs, key=lambda s: s.index, default=None)

    # -- scoring: blocks for one sequence outside batching -----------------------------------------

    def hold(self, seq: Sequence, num_tokens: int) -> None:
        if not self.block_manager.can_allocate(seq, num_tokens):
            raise UserError("not enough free KV blocks to score this sequence now; wait for running requests")
        self.block_manager.allocate(seq, num_tokens)
        self.held.append(seq)

    def release(self, seq: Sequence) -> None:
        self.held.remove(seq)
        self.block_manager.free(seq)

    # -- scheduling ------------------------------------------------------------------------------

    def schedule(self) -> SchedulerOutput | None:
        out = SchedulerOutput(is_prefill=False)
        budget = self.max_num_batched_tokens
        preemptions = self.num_preemptions
        block_size, max_len, running = self.block_manager.block_size, self.max_model_len, SequenceStatus.RUNNING
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status != running:
                continue  # preempted in this loop
            start = seq.num_computed_tokens
            left = seq.num_tokens - start
            if start == 0 or left > 1:  # prefill: its blocks came with admission
                take = self._fit(out, seq, start, min(left, budget))
                if take:
                    self._add(out, seq, start, take)
                    budget -= take
                continue
            n_out = len(seq.output_token_ids)
            if n_out >= seq.params.max_tokens or len(seq.prompt_token_ids) + n_out >= max_len:
                continue  # its token in flight is its last
            if not self._fit(out, seq, start, 1):
                continue
            if start >= len(seq.block_table) * block_size and not self._make_room(seq, 1):
                continue
            self._add(out, seq, start, 1)
            budget -= 1
        if self.num_preemptions == preemptions:  # blocks are short: admit no one this step
            budget = self._admit(out, budget)
        if not out.seqs:
            return None
        out.is_prefill = any(n > 1 for n in out.num_new_tokens)
        return out

    def _admit(self, out: SchedulerOutput, budget: int) -> int:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.output_token_ids and seq.output_token_ids[-1] == PENDING:
                break  # preempted while its last token was in flight: wait for it
            if self._waits_for_first_sample(seq) or not self.block_manager.admit(seq):
                break
            self.waiting.popleft()
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            start = seq.num_computed_tokens  # after the blocks it shares
            num_new = self._fit(out, seq, start, min(seq.num_tokens - start, budget))
            if not num_new:  # no logits row left this step: it runs from the next one
                break
            self._add(out, seq, start, num_new)
            budget -= num_new
        return budget

    def _waits_for_first_sample(self, seq: Sequence) -> bool:
        """A later sample of a request waits until the first has written the prompt's full blocks."""
        parent = seq.parent
        return (parent is not None and parent.status == SequenceStatus.RUNNING
                and parent.num_written_blocks < (seq.num_prompt_tokens - 1) // self.block_manager.block_size)

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
        seq.num_preemptions += 1
        self.num_preemptions += 1

    def _fit(self, out: SchedulerOutput, seq: Sequence, start: int, num_new: int) -> int:
        """The most of `num_new` tokens whose logits rows still fit in the step (prompt logprobs take one
        row per prompt position, so such a prefill is chunked by rows as well as by tokens)."""
        if self.max_num_logits is None:
            return num_new
        room = self.max_num_logits - out.num_logits
        while num_new > 0 and _rows(seq, start, num_new) > room:
            span = seq.prompt_logprob_positions(start, start + num_new)
            num_new = min(num_new - 1, max(0, span.start - start + room)) if span else num_new - 1
        return num_new

    @staticmethod
    def _add(out: SchedulerOutput, seq: Sequence, start: int, num_new: int) -> None:
        out.num_logits += _rows(seq, start, num_new)
        out.seqs.append(seq)
        out.num_new_tokens.append(num_new)
        out.starts.append(start)
        seq.num_computed_tokens = start + num_new
        samples = start + num_new == seq.num_tokens
        out.samples.append(samples)
        if samples:
            out.sample_indices.append(len(seq.output_token_ids))
            seq.output_token_ids.append(PENDING)
        else:
            out.sample_indices.append(-1)

    # -- results ---------------------------------------------------------------------------------

    def postprocess(self, out: SchedulerOutput, token_ids: list[int | None]) -> list[Sequence]:
        """Record a step's sampled tokens and finish the sequences that stopped on a token
        (EOS, stop_token_ids, max_tokens, max_model_len); returns those.

        `token_ids[i]` is the token sampled for `out.seqs[i]` (None where it did not sample).
        """
        finished = []
        bs, running = self.block_manager.block_size, SequenceStatus.RUNNING
        for seq, start, n, index, token_id in zip(out.seqs, out.starts, out.num_new_tokens, out.sample_indices,
                                                  token_ids, strict=True):
            # a block filled, by a sequence not finished or preempted while the step ran
            if (start + n) // bs > seq.num_written_blocks and seq.status == running:
                self.block_manager.mark_written(seq, start + n)
            if index < 0 or seq.is_finished:  # no sample, or aborted/stopped while the step ran
                continue
            seq.output_token_ids[index] = token_id
            reason = self._stop_reason(seq, token_id, index + 1)
            if reason is not None:
                self.finish(seq, reason)
                finished.append(seq)
        return finished

    def _stop_reason(self, seq: Sequence, token_id: int, num_outputs: int) -> str | None:
        params = seq.params
        if token_id in params.stop_token_ids or (not params.ignore_eos and token_id in self.eos_token_ids):
            return "stop"
        if num_outputs >= params.max_tokens or seq.num_prompt_tokens + num_outputs >= self.max_model_len:
            return "length"
        return None

    def finish(self, seq: Sequence, reason: str) -> None:
        """Finish `seq` (running or waiting): free its blocks, drop outputs still in flight."""
        if seq.is_finished:
            seq.finish_reason = reason
            return
        if seq in self.running:
            self.running.remove(seq)
        elif seq.status == SequenceStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        self.block_manager.free(seq)
        while seq.output_token_ids and seq.output_token_ids[-1] == PENDING:
            seq.output_token_ids.pop()
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason


def _rows(seq: Sequence, start: int, num_new: int) -> int:
    """Logits rows of `num_new` tokens of `seq` from `start`: its prompt logprob positions, and its sample."""
    return len(seq.prompt_logprob_positions(start, start + num_new)) + (start + num_new == seq.num_tokens)
