"""One generation request, end to end: check, submit, then stream the outputs or gather them."""

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .loop import EngineLoop, RequestStream
from .protocol import ApiError, sampling_params
from .responses import DONE, sse, usage

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.5
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def generate(engine_loop: EngineLoop, http_request: Request, body, prompt_token_ids: list[int],
                   response) -> Response:
    """`response` is a TextCompletion or ChatCompletion: it names the request and writes its objects."""
    params = sampling_params(body, len(prompt_token_ids), engine_loop.engine.max_model_len)
    stream = await engine_loop.submit(response.id, prompt_token_ids, params)
    if body.stream:
        events = _events(stream, response, body.include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(stream, response, http_request)


async def _events(stream: RequestStream, response, include_usage: bool):
    try:
        opening = response.opening_chunk()
        if opening is not None:
            yield sse(opening)
        last = None
        async for out in stream:
            if out.new_text or out.finished:
                yield sse(response.chunk(out.new_text, out.finish_reason if out.finished else None))
            last = out
        if include_usage:
            yield sse(response.usage_chunk(usage(last.num_prompt_tokens, last.num_output_tokens)))
        yield DONE
    except Exception as e:  # the engine failed, or the server is going away: tell the client
        yield sse(ApiError(str(e), status=500, type="server_error").body())
        yield DONE
    finally:
        stream.close()


async def _whole(stream: RequestStream, response, http_request: Request) -> Response:
    gathering = asyncio.ensure_future(_gather(stream))
    try:
        while not gathering.done():
            await asyncio.wait({gathering}, timeout=DISCONNECT_POLL_S)
            if not gathering.done() and await http_request.is_disconnected():
                return Response(status_code=499)  # nobody will read it; `finally` aborts
        text, last = gathering.result()
    finally:
        gathering.cancel()
        stream.close()
    body = response.response(text, last.finish_reason, usage(last.num_prompt_tokens, last.num_output_tokens))
    return JSONResponse(body)


async def _gather(stream: RequestStream) -> tuple[str, object]:
    pieces, last = [], None
    async for out in stream:
        pieces.append(out.new_text)
        last = out
    return "".join(pieces), last
