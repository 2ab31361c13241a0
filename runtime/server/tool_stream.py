"""Hermes tool calls in text that arrives piece by piece: content as soon as it cannot be part of a
call, each `<tool_call>` block as one ToolCall once its `</tool_call>` has arrived.

Whole responses go through the same splitter, so streamed and whole outputs agree: with calls, the
content is the text outside them without leading or trailing whitespace (None when empty); without
calls it is the text unchanged. A block that is not a valid call stays content.
"""

from __future__ import annotations

from .tool_calls import ToolCall, parse_tool_calls

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class ToolCallSplitter:
    def __init__(self):
        self._buffer = ""  # text that may still be (part of) a call
        self._space = ""  # whitespace held back: it ends the content, or is dropped next to a call
        self.content_sent = False
        self.num_calls = 0

    def feed(self, text: str) -> list[str | ToolCall]:
        """Content pieces and calls, in order, that `text` completes."""
        self._buffer += text
        events: list[str | ToolCall] = []
        while True:
            start = self._buffer.find(OPEN)
            if start < 0:
                cut = len(self._buffer) - _open_prefix_at_end(self._buffer)
                self._content(self._buffer[:cut], events)
                self._buffer = self._buffer[cut:]
                return events
            end = self._buffer.find(CLOSE, start)
            if end < 0:
                self._content(self._buffer[:start], events)
                self._buffer = self._buffer[start:]
                return events
            before, block = self._buffer[:start], self._buffer[start:end + len(CLOSE)]
            self._buffer = self._buffer[end + len(CLOSE):]
            _, calls = parse_tool_calls(block)
            if not calls:
                self._content(before + block, events)
                continue
            self._content(before, events)
            if not self.content_sent:
                self._space = ""  # whitespace before the first call
            events += calls
            self.num_calls += len(calls)

    def finish(self) -> list[str]:
        """The rest: an unfinished block is content; trailing whitespace is dropped after calls."""
        rest, self._buffer = self._space + self._buffer, ""
        self._space = ""
        if self.num_calls:
            rest = rest.rstrip()
        if rest:
            self.content_sent = True
            return [rest]
        return []

    def _content(self, text: str, events: list) -> None:
        text = self._space + text
        kept = text.rstrip()
        self._space = text[len(kept):]
        if kept:
            events.append(kept)
            self.content_sent = True


def _open_prefix_at_end(text: str) -> int:
    """Length of the longest end of `text` that begins `<tool_call>`."""
    for length in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-length:]):
            return length
    return 0
