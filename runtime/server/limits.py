"""What one request may cost the server: body size, prompt size, and text work kept off the event loop.

The event loop only parses JSON and hands work on; tokenizing a prompt and rendering a chat
template run in a small thread pool (`TextWork`), each refused beforehand when its input is
larger than any prompt the model can take, so /health and every other request stay prompt.
"""

import asyncio
from concurrent.futures import ThreadPoolExecutor

from .handlers import send_error
from .protocol import ApiError

MIN_BODY_BYTES, MAX_BODY_BYTES = 1 << 20, 32 << 20
DRAIN_BYTES = 64 << 20  # after refusing a body, read at most this much more of it before closing
BODY_BYTES_PER_TOKEN = 256  # JSON text of a prompt token, generously (escapes, chat message framing)
# A token is rarely longer than this many characters; a text longer than the context times it
# cannot fit the context, and is refused before it is tokenized.
MAX_CHARS_PER_TOKEN = 64


def default_max_body_bytes(max_model_len: int) -> int:
    """Room for the longest prompt the context can take, between 1 MiB and 32 MiB."""
    return min(MAX_BODY_BYTES, max(MIN_BODY_BYTES, max_model_len * BODY_BYTES_PER_TOKEN))


class BodyLimit:
    """ASGI middleware: refuse a request body over `max_bytes` (400) without reading the rest of it."""

    def __init__(self, app, max_bytes: int = MAX_BODY_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return await _discard(receive, DRAIN_BYTES)
        chunks, seen = [], 0
        while True:  # read the body here, refusing it as soon as it is over the limit
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.max_bytes:
                await self._refuse(send)
                return await _discard(receive, DRAIN_BYTES)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send):
        error = ApiError(f"the request body is over {self.max_bytes} bytes; send a shorter prompt",
                         code="request_too_large")
        await send_error(send, error)  # the body is then drained, so the connection may stay open


async def _discard(receive, limit: int) -> None:
    """Read and drop what the client is still sending (up to `limit` bytes), so that a client that writes its
    whole body before reading sees the refusal rather than a connection closed under it."""
    seen = 0
    while seen <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        seen += len(message.get("body", b""))


def check_text(text: str, field: str, max_chars: int) -> None:
    """Refuse (400) text that cannot be encoded as UTF-8 (a lone surrogate) or is longer than `max_chars`."""
    if len(text) > max_chars:
        raise ApiError(f"{field} has {len(text)} characters; this model's context cannot hold more than "
                       f"{max_chars}: shorten it", param=field, code="context_length_exceeded")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(f"{field} contains a lone surrogate (\\u{ord(text[e.start]):04x}) at character {e.start}; "
                       "send valid Unicode", param=field, code="invalid_value") from None


class TextWork:
    """A few threads for tokenizing and template rendering, so the event loop never does them."""

    def __init__(self, workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llmc-text")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
