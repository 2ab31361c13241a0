"""One generation request, end to end: check, submit, then stream the outputs or gather them."""

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .loop import EngineLoop, RequestStream
from .params import sampling_params
from .protocol import ApiError
from .responses import DONE, sse, usage

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.5
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def generate(engine_loop: EngineLoop, http_request: Request, body, prompt_token_ids: list[int],
                   response) -> Response:
    """`response` is a TextCompletion or ChatCompletion: it names the request and writes its objects.
    With n > 1 each sample is a choice (its `index`); the prompt counts once in the usage."""
    params = sampling_params(body, len(prompt_token_ids), engine_loop.engine.max_model_len)
    stream = await engine_loop.submit(response.id, prompt_token_ids, params)
    if body.stream:
        events = _events(stream, response, params.n, body.include_usage)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(stream, response, params.n, http_request)


async def _events(stream: RequestStream, response, n: int, include_usage: bool):
    try:
        for index in range(n):
            for chunk in response.opening_chunks(index):
                yield sse(chunk)
        last = {}
        async for out in stream:
            for chunk in response.chunks(out.new_text, out.finish_reason if out.finished else None, out.index):
                yield sse(chunk)
            last[out.index] = out
        if include_usage:
            yield sse(response.usage_chunk(_usage(last)))
        yield DONE
    except Exception as e:  # the engine failed, or the server is going away: tell the client
        yield sse(ApiError(str(e), status=500, type="server_error").body())
        yield DONE
    finally:
        stream.close()


async def _whole(stream: RequestStream, response, n: int, http_request: Request) -> Response:
    gathering = asyncio.ensure_future(_gather(stream, n))
    try:
        while not gathering.done():
            await asyncio.wait({gathering}, timeout=DISCONNECT_POLL_S)
            if not gathering.done() and await http_request.is_disconnected():
                return Response(status_code=499)  # nobody will read it; `finally` aborts
        texts, last = gathering.result()
    finally:
        gathering.cancel()
        stream.close()
    choices = [(texts[i], last[i].finish_reason) for i in range(n)]
    return JSONResponse(response.response(choices, _usage(last)))


async def _gather(stream: RequestStream, n: int) -> tuple[list[str], dict]:
    pieces, last = [[] for _ in range(n)], {}
    async for out in stream:
        pieces[out.index].append(out.new_text)
        last[out.index] = out
    return ["".join(p) for p in pieces], last


def _usage(last: dict) -> dict:
    """The prompt once, and every sample's tokens."""
    outputs = list(last.values())
    return usage(outputs[0].num_prompt_tokens if outputs else 0, sum(o.num_output_tokens for o in outputs))
