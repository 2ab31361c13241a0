"""Structured output: a request's constraint, compiled by llguidance into a token matcher.

Before each sampled token the matcher gives the bitmask of allowed tokens (bit t of word t // 32);
the sampler drops every other token. llguidance needs neither torch nor transformers (xgrammar
needs both), and reads the bundle's tokenizer.json as it is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmc.errors import UserError

KINDS = ("json_schema", "json_object", "regex", "choice", "grammar")


@dataclass(frozen=True)
class Constraint:
    """What the output must match. `value`: a JSON schema (dict), a regex, a list of strings, a Lark grammar."""

    kind: str
    value: Any = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise UserError(f"structured output {self.kind!r} is not supported; choose one of {', '.join(KINDS)}")
        expected = {"json_schema": dict, "json_object": type(None), "regex": str, "choice": list, "grammar": str}[self.kind]
        if not isinstance(self.value, expected):
            raise UserError(f"{self.kind}: must be {expected.__name__ if expected is not type(None) else 'empty'}")
        if self.kind == "choice" and (not self.value or not all(isinstance(c, str) and c for c in self.value)):
            raise UserError("choice: must be a non-empty list of non-empty strings")

    def grammar(self) -> str:
        from llguidance import LLMatcher, grammar_from

        if self.kind == "json_object":
            return LLMatcher.grammar_from_json_schema({"type": "object"})
        if self.kind == "json_schema":
            return LLMatcher.grammar_from_json_schema(self.value)
        if self.kind == "regex":
            return LLMatcher.grammar_from_regex(self.value)
        if self.kind == "choice":
            return grammar_from("choice", json.dumps(self.value))
        return LLMatcher.grammar_from_lark(self.value)


def bitmask_words(vocab_size: int) -> int:
    return (vocab_size + 31) // 32


class GrammarCompiler:
    """One per engine: wraps the tokenizer once (llguidance's slow step), then compiles constraints."""

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_token_ids: tuple[int, ...]):
        try:
            from llguidance import LLTokenizer
        except ImportError:
            raise UserError("structured output needs llguidance: pip install llguidance") from None
        eos = list(eos_token_ids) or None
        self.tokenizer = LLTokenizer(tokenizer_json, n_vocab=vocab_size, eos_token=eos)
        self.vocab_size = vocab_size

    def matcher(self, constraint: Constraint) -> TokenMatcher:
        from llguidance import LLMatcher

        try:
            grammar = constraint.grammar()
        except ValueError as e:
            raise UserError(f"{constraint.kind}: {e}") from None
        error = LLMatcher.validate_grammar(grammar, self.tokenizer)
        if error:
            raise UserError(f"{constraint.kind}: {error.strip().splitlines()[0]}")
        return TokenMatcher(LLMatcher(self.tokenizer, grammar, log_level=0), self.vocab_size)


class TokenMatcher:
    """The state of one sequence's constraint: the mask for its next token, and the tokens it took."""

    def __init__(self, matcher, vocab_size: int):
        self._matcher = matcher
        self.vocab_size, self.words = vocab_size, bitmask_words(vocab_size)

    def fill_bitmask(self, row: np.ndarray) -> None:
        """Writes the allowed-token bitmask into `row` (int32, `words` long, contiguous)."""
        assert row.dtype == np.int32 and row.shape == (self.words,) and row.flags["C_CONTIGUOUS"]
        self._matcher.unsafe_compute_mask_ptr(row.ctypes.data, row.nbytes)

    def copy(self) -> TokenMatcher:
        """An independent matcher in the same state (one per sample of a request)."""
        return TokenMatcher(self._matcher.deep_copy(), self.vocab_size)

    def accept(self, token: int) -> bool:
        """False when the token breaks the constraint (it was not in the last mask)."""
        return self._matcher.consume_token(int(token))

    @property
    def is_finished(self) -> bool:
        """The constraint is complete: only end of sequence may follow."""
        return self._matcher.is_stopped()

    @property
    def error(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


def allowed(bitmask: np.ndarray, vocab_size: int) -> np.ndarray:
    """bool[..., vocab]: the tokens a bitmask allows (the reference for the sampler's masking)."""
    bits = (bitmask[..., :, None].astype(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1
    return bits.reshape(*bitmask.shape[:-1], -1)[..., :vocab_size].astype(bool)
