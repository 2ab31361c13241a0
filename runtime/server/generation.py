"""One generation request, end to end: check, submit, then stream the outputs or gather them."""

import asyncio

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .loop import EngineLoop, RequestStream
from .params import sampling_params
from .protocol import ApiError
from .logprobs import ChoiceShaper, merge
from .responses import DONE, ChatCompletion, sse, usage

# How often a non-streaming request checks whether its client is still there.
DISCONNECT_POLL_S = 0.5
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def generate(engine_loop: EngineLoop, http_request: Request, body, prompt_token_ids: list[int],
                   response, tool_constraint=None) -> Response:
    """`response` is a TextCompletion or ChatCompletion: it names the request and writes its objects.
    With n > 1 each sample is a choice (its `index`); the prompt counts once in the usage."""
    params = sampling_params(body, len(prompt_token_ids), engine_loop.engine.max_model_len, tool_constraint)
    shaper = _shaper(engine_loop.engine, body, prompt_token_ids, response)
    stream = await engine_loop.submit(response.id, prompt_token_ids, params)
    if body.stream:
        events = _events(stream, response, params.n, body.include_usage, shaper)
        return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)
    return await _whole(stream, response, params.n, http_request, shaper)


def _shaper(engine, body, prompt_token_ids: list[int], response) -> ChoiceShaper:
    echo, decode = getattr(body, "echo", False), engine.tokenizer.decode
    return ChoiceShaper(decode, isinstance(response, ChatCompletion), prompt_token_ids,
                        echo_text=decode(prompt_token_ids) if echo else None,
                        drop_generated=echo and body.requested_max_tokens() == 0)


async def _events(stream: RequestStream, response, n: int, include_usage: bool, shaper: ChoiceShaper):
    try:
        for index in range(n):
            for chunk in response.opening_chunks(index):
                yield sse(chunk)
        last = {}
        async for out in stream:
            text, logprobs = shaper.piece(out)
            for chunk in response.chunks(text, out.finish_reason if out.finished else None, out.index, logprobs):
                yield sse(chunk)
            last[out.index] = out
        if include_usage:
            yield sse(response.usage_chunk(_usage(last, shaper)))
        yield DONE
    except Exception as e:  # the engine failed, or the server is going away: tell the client
        yield sse(ApiError(str(e), status=500, type="server_error").body())
        yield DONE
    finally:
        stream.close()


async def _whole(stream: RequestStream, response, n: int, http_request: Request, shaper: ChoiceShaper) -> Response:
    gathering = asyncio.ensure_future(_gather(stream, n, shaper))
    try:
        while not gathering.done():
            await asyncio.wait({gathering}, timeout=DISCONNECT_POLL_S)
            if not gathering.done() and await http_request.is_disconnected():
                return Response(status_code=499)  # nobody will read it; `finally` aborts
        texts, logprobs, last = gathering.result()
    finally:
        gathering.cancel()
        stream.close()
    choices = [(texts[i], last[i].finish_reason, merge(logprobs[i])) for i in range(n)]
    return JSONResponse(response.response(choices, _usage(last, shaper)))


async def _gather(stream: RequestStream, n: int, shaper: ChoiceShaper) -> tuple[list[str], list[list[dict]], dict]:
    pieces, logprobs, last = [[] for _ in range(n)], [[] for _ in range(n)], {}
    async for out in stream:
        text, fragment = shaper.piece(out)
        pieces[out.index].append(text)
        if fragment is not None:
            logprobs[out.index].append(fragment)
        last[out.index] = out
    return ["".join(p) for p in pieces], logprobs, last


def _usage(last: dict, shaper: ChoiceShaper) -> dict:
    """The prompt once, and every sample's tokens (none shown for max_tokens 0)."""
    outputs = list(last.values())
    completion = 0 if shaper.drop_generated else sum(o.num_output_tokens for o in outputs)
    return usage(outputs[0].num_prompt_tokens if outputs else 0, completion)
