"""OpenAI response objects: whole responses, stream chunks, usage, server-sent events.

`TextCompletion` and `ChatCompletion` share one shape, so one generation path serves both
endpoints and only the objects it writes differ.
"""

import json
import time
import uuid

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

    def response(self, text: str, finish_reason: str, usage: dict) -> dict:
        return self._object("text_completion", [self._choice(text, finish_reason)], usage)

    def opening_chunk(self) -> dict | None:
        return None

    def chunk(self, text: str, finish_reason: str | None = None) -> dict:
        return self._object("text_completion", [self._choice(text, finish_reason)])

    def usage_chunk(self, usage: dict) -> dict:
        return self._object("text_completion", [], usage)

    @staticmethod
    def _choice(text: str, finish_reason: str | None) -> dict:
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}


class ChatCompletion(_Response):
    prefix = "chatcmpl"

    def response(self, text: str, finish_reason: str, usage: dict) -> dict:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        return self._object("chat.completion", [choice], usage)

    def opening_chunk(self) -> dict | None:
        return self._chunk({"role": "assistant", "content": ""}, None)

    def chunk(self, text: str, finish_reason: str | None = None) -> dict:
        return self._chunk({"content": text} if text else {}, finish_reason)

    def usage_chunk(self, usage: dict) -> dict:
        return self._object("chat.completion.chunk", [], usage)

    def _chunk(self, delta: dict, finish_reason: str | None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._object("chat.completion.chunk", [choice])
