"""The OpenAI-compatible HTTP app over one engine."""

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response

from llmc.errors import UserError

from .auth import ApiKeyAuth
from .chat import ChatTemplate
from .generation import generate
from .handlers import install_error_handlers
from .info import model_card, startup_line, version
from .limits import MAX_CHARS_PER_TOKEN, BodyLimit, TextWork, check_text, default_max_body_bytes
from .loop import EngineLoop
from .metrics import ServerMetrics
from .protocol import (
    ApiError, ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest, chat_messages,
    check_model, prompt_of,
)
from .responses import ChatCompletion, TextCompletion
from .tool_calls import call_constraint, check_tools

DEFAULT_MAX_WAITING = 256
log = logging.getLogger("llmc.serve")


def create_app(engine, model_name: str | None = None, max_waiting: int = DEFAULT_MAX_WAITING,
               chat_template: str | None = None, max_body_bytes: int | None = None,
               api_key: str | None = None) -> FastAPI:
    """`chat_template` (Jinja source) replaces the one the bundle carries; `max_body_bytes` (default: room
    for the longest prompt the context takes, 1 to 32 MiB) bounds a request body; with `api_key`, /v1/*
    requests must send `Authorization: Bearer API_KEY`."""
    served = model_name or engine.model_name
    tokenizer = engine.tokenizer
    template_source = chat_template or tokenizer.chat_template
    max_chars = engine.max_model_len * MAX_CHARS_PER_TOKEN  # no longer text fits the context
    template = (ChatTemplate(template_source, tokenizer.bos_token, tokenizer.eos_token, max_chars=max_chars)
                if template_source else None)
    engine_loop = EngineLoop(engine, ServerMetrics(served, engine.max_model_len), max_waiting)
    text_work = TextWork()
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info(startup_line(engine, served))
        engine_loop.start()
        try:
            yield
        finally:
            text_work.close()
            await engine_loop.stop()

    app = FastAPI(title="llmc", lifespan=lifespan)
    app.state.engine_loop = engine_loop
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes or default_max_body_bytes(engine.max_model_len))
    if api_key:
        app.add_middleware(ApiKeyAuth, api_key=api_key)
    install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if engine_loop.alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine_loop.metrics.render(), media_type=engine_loop.metrics.content_type)

    @app.get("/version")
    async def get_version() -> dict:
        return version()

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(served, started, engine.max_model_len)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str) -> dict:
        if model_id != served:
            raise ApiError(f"The model `{model_id}` does not exist; this server serves `{served}`.", status=404,
                           param="model", code="model_not_found")
        return model_card(served, started, engine.max_model_len)

    async def render_chat(messages, add_generation_prompt: bool, tools: list[dict] | None = None) -> str:
        if template is None:
            raise ApiError("this model has no chat template: start the server with --chat-template FILE")
        messages = chat_messages(messages)
        for i, message in enumerate(messages):
            if isinstance(message.get("content"), str):
                check_text(message["content"], f"messages[{i}].content", max_chars)
        text = await text_work.run(template.render, messages, add_generation_prompt, tools)
        check_text(text, "messages", max_chars)
        return text

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model, served)
        prompt = prompt_of(body)
        if isinstance(prompt, str):
            check_text(prompt, "prompt", max_chars)
            prompt = await text_work.run(_encode, tokenizer, prompt)
        return await generate(engine_loop, request, body, prompt, TextCompletion(served))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body.model, served)
        tools, choice = _tools_to_render(body, template_source)
        text = await render_chat(body.messages, body.add_generation_prompt, tools)
        ids = await text_work.run(_encode_chat, tokenizer, text)
        return await generate(engine_loop, request, body, ids, ChatCompletion(served, tool_calls=bool(tools)),
                              call_constraint(tools, choice))

    @app.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict:
        check_model(body.model, served)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError("give either prompt or messages", param="prompt")
        if body.messages is not None:
            text = await render_chat(body.messages, body.add_generation_prompt)
            ids = await text_work.run(_encode_chat, tokenizer, text)
        else:
            check_text(body.prompt, "prompt", max_chars)
            ids = await text_work.run(_encode, tokenizer, body.prompt)
        strs = await text_work.run(_token_strs, tokenizer, ids) if body.return_token_strs else None
        return {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids, "token_strs": strs}

    @app.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict:
        check_model(body.model, served)
        bad = [t for t in body.tokens if not 0 <= t < engine.vocab_size]
        if bad:
            raise ApiError(f"token id {bad[0]} is outside the vocabulary", param="tokens", code="invalid_value")
        return {"prompt": await text_work.run(tokenizer.decode, body.tokens)}

    return app


def _tools_to_render(body: ChatCompletionRequest, chat_template: str | None) -> tuple[list[dict], str | dict]:
    """The tools the template renders (none for tool_choice "none") and the choice, or a 400 naming tools or
    tool_choice."""
    try:
        return check_tools(body.tools, body.tool_choice, chat_template)
    except UserError as e:
        raise ApiError(str(e), param=str(e).split(":")[0], code="invalid_value") from None


def _encode(tokenizer, text: str) -> list[int]:
    try:
        return tokenizer.encode(text)
    except UserError:
        raise
    except Exception as e:  # the tokenizer refused this text
        raise ApiError(f"prompt cannot be tokenized: {type(e).__name__}: {e}", param="prompt") from None


def _token_strs(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def _encode_chat(tokenizer, text: str) -> list[int]:
    ids = _encode(tokenizer, text)
    # A template that writes bos_token itself, and a tokenizer that adds one too: keep one.
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and len(ids) >= 2 and ids[0] == ids[1]:
        ids = ids[1:]
    return ids
