"""The host half of sampling: each logits row's parameters, uniform draw, logit edits and token mask.

Sampling itself runs on the device, at the end of every plan (`edit_logits` then `sample`), so the
host only writes, per row, the request's temperature, top-k, top-p, min-p and the uniform number
that picks its token; the sparse logit edits of its penalties, logit_bias and min_tokens (see
aot/ir/ops/logit_edits.py); and, for structured output, the bitmask of the tokens its grammar
allows next. A request whose values the plan's inputs cannot hold is reported here, by row, so the
step can fail that request alone.

Penalties and grammars read the values of earlier output tokens: the engine reads a step's tokens
before it launches the next one for such requests (no overlap), and advances the grammar with
`accept`. Per-sequence state (prompt tokens, output counts, grammar) lives as long as the sequence.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from llmc.errors import LlmcError

from .sampling_params import uniform_draw
from .sequence import PENDING

INT32_MAX = 2**31 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)


class RowError(ValueError):
    """Some requests' sampling values do not fit the plan's inputs; `seqs` are the culprits."""

    def __init__(self, seqs, message: str):
        super().__init__(message)
        self.seqs = seqs


@dataclass
class StepRows:
    """What the plan's sampling inputs get, row by row (padding is the runner's)."""

    temperature: list[float] = field(default_factory=list)
    top_k: list[int] = field(default_factory=list)
    top_p: list[float] = field(default_factory=list)
    min_p: list[float] = field(default_factory=list)
    uniform: list[float] = field(default_factory=list)
    edit_index: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))  # (row, token)
    edit_values: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))  # (scale, bias, add)
    masks: list[tuple[int, object]] = field(default_factory=list)  # (row, TokenMatcher) of constrained rows


class _History:
    """One sequence's distinct prompt tokens and output token counts, counted up to `counted`."""

    def __init__(self, prompt_token_ids: list[int]):
        self.prompt = np.unique(np.asarray(prompt_token_ids, dtype=np.int64))
        self.counts: dict[int, int] = {}
        self.counted = 0

    def output_counts(self, seq, upto: int) -> tuple[np.ndarray, np.ndarray]:
        """(distinct output tokens sorted, their counts) among the first `upto` outputs."""
        if upto < self.counted:  # cannot happen: outputs are only appended
            self.counts, self.counted = {}, 0
        for token in seq.output_token_ids[self.counted : upto]:
            if token == PENDING:
                raise LlmcError(f"request {seq.request_id}: an output token it penalises is not known yet")
            self.counts[token] = self.counts.get(token, 0) + 1
        self.counted = upto
        tokens = np.fromiter(self.counts, dtype=np.int64, count=len(self.counts))
        counts = np.fromiter(self.counts.values(), dtype=np.int64, count=len(self.counts))
        order = np.argsort(tokens)
        return tokens[order], counts[order]


class Sampler:
    def __init__(self, vocab_size: int, eos_token_ids=()):
        self.vocab_size = vocab_size
        self.eos_token_ids = tuple(eos_token_ids)
        self._histories: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._matchers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # -- structured output ---------------------------------------------------------------------

    def constrain(self, seq, matcher) -> None:
        """`seq` samples only what `matcher` (a TokenMatcher of its own) allows."""
        self._matchers[seq] = matcher

    def accept(self, seq, token: int) -> str | None:
        """Advance `seq`'s grammar past its sampled `token`; the reason when the token breaks it."""
        matcher = self._matchers.get(seq)
        if matcher is None or matcher.accept(token):
            return None
        return f"structured output: token {token} does not match the grammar ({matcher.error or 'not allowed'})"

    # -- one step ------------------------------------------------------------------------------

    def rows(self, seqs, indices, max_edits: int | None = None) -> StepRows:
        """The sampling inputs of the sequences that sample; `indices[i]` is the index of the output
        token seqs[i] samples (its draw). Greedy rows draw nothing. `max_edits`: the plan's room for
        logit edits (None: that of a plan without edit inputs, which honours none)."""
        out = StepRows()
        bad, edits, vocab = [], [], self.vocab_size
        for row, (seq, index) in enumerate(zip(seqs, indices)):
            p = seq.params
            t = p.temperature
            if not 0 <= t <= FLOAT32_MAX:
                bad.append(seq)
            out.temperature.append(t)
            out.top_k.append(p.top_k if p.top_k < vocab else 0)  # k >= vocab keeps every token: off
            out.top_p.append(p.top_p)
            out.min_p.append(p.min_p)
            out.uniform.append(uniform_draw(seq.seed, index) if t > 0 else 0.0)
            tokens, values = self._row_edits(seq, index)
            if len(tokens):
                edits.append((row, seq, tokens, values))
            if seq in self._matchers:
                if max_edits is None:
                    raise RowError([seq], f"request {seq.request_id!r} asks for structured output, which this "
                                          "bundle's plans cannot mask: rebuild the bundle with this llmc")
                out.masks.append((row, self._matchers[seq]))
        if bad:
            raise RowError(bad, f"temperature of request {bad[0].request_id!r} does not fit a float32")
        self._pack_edits(out, edits, max_edits)
        return out

    def _pack_edits(self, out: StepRows, edits: list, max_edits: int | None) -> None:
        total = 0
        for _, seq, tokens, _ in edits:
            total += len(tokens)
            if max_edits is None or total > max_edits:
                room = "none: rebuild the bundle with this llmc" if max_edits is None else str(max_edits)
                raise RowError([seq], f"request {seq.request_id!r} needs {len(tokens)} logit edits (penalties over "
                                      f"its distinct tokens, logit_bias, min_tokens); this step's plan has room "
                                      f"for {room} in all")
        if edits:
            rows = np.concatenate([np.full(len(tokens), row, np.int32) for row, _, tokens, _ in edits])
            out.edit_index = np.stack([rows, np.concatenate([e[2] for e in edits]).astype(np.int32)], 1)
            out.edit_values = np.concatenate([e[3] for e in edits])

    def _row_edits(self, seq, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, [scale, bias, add] per token) of one row, at most one entry per token."""
        p = seq.params
        repetition = p.repetition_penalty != 1
        penalised = p.presence_penalty != 0 or p.frequency_penalty != 0
        banned = self._banned(seq, index)
        if not (repetition or penalised or p.logit_bias or banned):
            return np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
        parts = [np.asarray(banned, dtype=np.int64)]
        bias_tokens = np.array([token for token, _ in p.logit_bias], dtype=np.int64)
        parts.append(bias_tokens)
        out_tokens = out_counts = np.zeros(0, np.int64)
        history = None
        if repetition or penalised:
            history = self._histories.get(seq)
            if history is None:
                history = self._histories[seq] = _History(seq.prompt_token_ids)
            out_tokens, out_counts = history.output_counts(seq, index)
            parts.append(out_tokens)
            if repetition:
                parts.append(history.prompt)
        tokens = np.unique(np.concatenate(parts))
        tokens = tokens[tokens < self.vocab_size]
        values = np.zeros((len(tokens), 3), np.float32)
        values[:, 0] = 1.0
        if repetition:
            seen = np.isin(tokens, history.prompt) | np.isin(tokens, out_tokens)
            values[seen, 0] = p.repetition_penalty
        if p.logit_bias:
            keep = bias_tokens < self.vocab_size
            values[np.searchsorted(tokens, bias_tokens[keep]), 1] = [v for (_, v), k in zip(p.logit_bias, keep) if k]
        if penalised and len(out_tokens):
            at = np.searchsorted(tokens, out_tokens)
            values[at, 2] -= p.frequency_penalty * out_counts + p.presence_penalty
        if banned:
            values[np.searchsorted(tokens, np.asarray(banned, dtype=np.int64)), 2] = -np.inf
        return tokens, values

    def _banned(self, seq, index: int) -> list[int]:
        """min_tokens: the stop tokens while fewer outputs are out (none once a grammar is complete)."""
        p = seq.params
        if index >= p.min_tokens:
            return []
        matcher = self._matchers.get(seq)
        if matcher is not None and matcher.is_finished:
            return []
        stops = set(p.stop_token_ids) | (set() if p.ignore_eos else set(self.eos_token_ids))
        return sorted(t for t in stops if t < self.vocab_size)
