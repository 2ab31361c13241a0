"""Incremental detokenisation of a request's output, and stop strings on its text.

As in vLLM, the text ends just before the first stop string, or with `include_stop` just after
it. While streaming without `include_stop`, the last `max(len(stop)) - 1` characters are held
back: they may yet turn out to be the start of a stop string, which would be cut.
"""

from collections.abc import Callable, Sequence

# Prompt tokens decoded as context, so the first output token gets its leading space right.
_CONTEXT_TOKENS = 6


class StopChecker:
    def __init__(
        self,
        decode: Callable[[list[int]], str],
        stop: Sequence[str] = (),
        prompt_token_ids: Sequence[int] = (),
        include_stop: bool = False,
    ):
        self.decode = decode
        self.stop = tuple(stop)
        self.include_stop = include_stop
        self._overlap = max((len(s) for s in self.stop), default=1) - 1  # a stop may start this far back
        self._holdback = 0 if include_stop else self._overlap
        self._token_ids = list(prompt_token_ids[-_CONTEXT_TOKENS:])
        self._prefix_offset = 0  # where the context of the next decode starts
        self._read_offset = len(self._token_ids)  # tokens before this are already text
        self._emitted = 0
        self.text = ""
        self.stopped = False

    def append(self, token_id: int) -> bool:
        """Add one output token; True when the text now contains a stop string."""
        if self.stopped:
            return True
        self._token_ids.append(token_id)
        # Decode with a few tokens of context: a token's text can depend on its neighbours
        # (leading spaces), and a token that ends inside a UTF-8 character decodes to U+FFFD
        # until the tokens that complete the character arrive.
        prefix_text = self.decode(self._token_ids[self._prefix_offset : self._read_offset])
        full_text = self.decode(self._token_ids[self._prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith("\ufffd"):
            return False
        self._prefix_offset, self._read_offset = self._read_offset, len(self._token_ids)
        start = max(0, len(self.text) - self._overlap)
        self.text += full_text[len(prefix_text) :]
        if self.stop:
            hits = [(i, len(s)) for s, i in ((s, self.text.find(s, start)) for s in self.stop) if i >= 0]
            if hits:
                at, length = min(hits)
                self.text = self.text[: at + length if self.include_stop else at]
                self.stopped = True
        return self.stopped

    def delta(self, finished: bool = False) -> str:
        """Text not yet returned that can no longer become part of a stop string.

        With `finished`, everything: the held-back tail and any incomplete character.
        """
        if finished and not self.stopped:
            prefix_text = self.decode(self._token_ids[self._prefix_offset : self._read_offset])
            self.text += self.decode(self._token_ids[self._prefix_offset :])[len(prefix_text) :]
            self._prefix_offset = self._read_offset = len(self._token_ids)
        end = len(self.text) if finished or self.stopped else len(self.text) - self._holdback
        if end <= self._emitted:
            return ""
        out = self.text[self._emitted : end]
        self._emitted = end
        return out
