"""OpenAI response objects: whole responses, stream chunks, usage, server-sent events.

`TextCompletion` and `ChatCompletion` share one shape, so one generation path serves both
endpoints and only the objects it writes differ.
"""

import json
import time
import uuid

from .tool_stream import ToolCallSplitter

DONE = "data: [DONE]\n\n"


def sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class _Response:
    prefix = ""

    def __init__(self, model: str):
        self.id = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def _object(self, kind: str, choices: list[dict], usage: dict | None = None) -> dict:
        body = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": choices}
        if usage is not None:
            body["usage"] = usage
        return body


class TextCompletion(_Response):
    prefix = "cmpl"

    def response(self, choices: list[tuple], usage: dict) -> dict:
        """`choices`: (text, finish_reason[, logprobs]) per sample."""
        return self._object("text_completion", [self._choice(*choice[:2], i, *choice[2:]) for i, choice in
                                                enumerate(choices)], usage)

    def opening_chunks(self, index: int) -> list[dict]:
        return []

    def chunks(self, text: str, finish_reason: str | None = None, index: int = 0, logprobs: dict | None = None
               ) -> list[dict]:
        if not text and finish_reason is None and logprobs is None:
            return []
        return [self._object("text_completion", [self._choice(text, finish_reason, index, logprobs)])]

    def usage_chunk(self, usage: dict) -> dict:
        return self._object("text_completion", [], usage)

    @staticmethod
    def _choice(text: str, finish_reason: str | None, index: int, logprobs: dict | None = None) -> dict:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


class ChatCompletion(_Response):
    """With `tool_calls`, the output's Hermes `<tool_call>` blocks become the message's tool_calls."""

    prefix = "chatcmpl"

    def __init__(self, model: str, tool_calls: bool = False):
        super().__init__(model)
        self.tool_calls = tool_calls
        self._splitters: dict[int, ToolCallSplitter] = {}  # per sample

    def response(self, choices: list[tuple], usage: dict) -> dict:
        """`choices`: (text, finish_reason[, logprobs]) per sample."""
        return self._object("chat.completion", [self._message(*choice[:2], i, *choice[2:]) for i, choice in
                                                enumerate(choices)], usage)

    def _message(self, text: str, finish_reason: str, index: int, logprobs: dict | None = None) -> dict:
        message = {"role": "assistant", "content": text}
        if self.tool_calls:
            splitter = self._splitter(index)
            events = splitter.feed(text) + splitter.finish()
            calls = [event.to_openai(i) for i, event in enumerate(e for e in events if not isinstance(e, str))]
            if calls:
                message = {"role": "assistant", "content": "".join(e for e in events if isinstance(e, str)) or None,
                           "tool_calls": [{k: v for k, v in call.items() if k != "index"} for call in calls]}
                finish_reason = self._finish_reason(finish_reason, index)
        return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}

    def opening_chunks(self, index: int) -> list[dict]:
        return [self._chunk({"role": "assistant", "content": ""}, None, index)]

    def chunks(self, text: str, finish_reason: str | None = None, index: int = 0, logprobs: dict | None = None
               ) -> list[dict]:
        chunks = self._content_chunks(text, finish_reason, index)
        if logprobs is not None:  # the tokens' logprobs ride on the first chunk of their text
            if not chunks:
                chunks = [self._chunk({}, None, index)]
            chunks[0]["choices"][0]["logprobs"] = logprobs
        return chunks

    def _content_chunks(self, text: str, finish_reason: str | None, index: int) -> list[dict]:
        if not self.tool_calls:
            if not text and finish_reason is None:
                return []
            return [self._chunk({"content": text} if text else {}, finish_reason, index)]
        splitter = self._splitter(index)
        events = splitter.feed(text) + (splitter.finish() if finish_reason is not None else [])
        chunks, call = [], splitter.num_calls - sum(not isinstance(e, str) for e in events)
        for event in events:
            if isinstance(event, str):
                chunks.append(self._chunk({"content": event}, None, index))
            else:
                chunks.append(self._chunk({"tool_calls": [event.to_openai(call)]}, None, index))
                call += 1
        if finish_reason is not None:
            chunks.append(self._chunk({}, self._finish_reason(finish_reason, index), index))
        return chunks

    def usage_chunk(self, usage: dict) -> dict:
        return self._object("chat.completion.chunk", [], usage)

    def _splitter(self, index: int) -> ToolCallSplitter:
        return self._splitters.setdefault(index, ToolCallSplitter())

    def _finish_reason(self, finish_reason: str, index: int) -> str:
        # as vLLM: a response that made calls ends for them, unless it ran out of tokens
        return "tool_calls" if self._splitters[index].num_calls and finish_reason == "stop" else finish_reason

    def _chunk(self, delta: dict, finish_reason: str | None, index: int) -> dict:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._object("chat.completion.chunk", [choice])
