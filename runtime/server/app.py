"""The OpenAI-compatible HTTP app over one engine."""

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from llmc.errors import UserError

from .chat import ChatTemplate
from .generation import generate
from .loop import EngineLoop, Unavailable
from .metrics import ServerMetrics
from .protocol import ApiError, ChatCompletionRequest, CompletionRequest, chat_messages, check_model, prompt_of
from .responses import ChatCompletion, TextCompletion

DEFAULT_MAX_WAITING = 256


def create_app(engine, model_name: str | None = None, max_waiting: int = DEFAULT_MAX_WAITING,
               chat_template: str | None = None) -> FastAPI:
    """`chat_template` (Jinja source) replaces the one the bundle carries."""
    served = model_name or engine.model_name
    tokenizer = engine.tokenizer
    template_source = chat_template or tokenizer.chat_template
    template = ChatTemplate(template_source, tokenizer.bos_token, tokenizer.eos_token) if template_source else None
    engine_loop = EngineLoop(engine, ServerMetrics(), max_waiting)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine_loop.start()
        try:
            yield
        finally:
            await engine_loop.stop()

    app = FastAPI(title="llmc", lifespan=lifespan)
    app.state.engine_loop = engine_loop
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if engine_loop.alive else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(engine_loop.metrics.render(), media_type=engine_loop.metrics.content_type)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": served, "object": "model", "created": started, "owned_by": "llmc",
                "max_model_len": engine.max_model_len}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        check_model(body.model, served)
        prompt = prompt_of(body)
        prompt_token_ids = tokenizer.encode(prompt) if isinstance(prompt, str) else prompt
        return await generate(engine_loop, request, body, prompt_token_ids, TextCompletion(served))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        check_model(body.model, served)
        if template is None:
            raise ApiError("this model has no chat template: start the server with --chat-template FILE")
        text = template.render(chat_messages(body.messages))
        return await generate(engine_loop, request, body, _encode_chat(tokenizer, text), ChatCompletion(served))

    return app


def _encode_chat(tokenizer, text: str) -> list[int]:
    ids = tokenizer.encode(text)
    # A template that writes bos_token itself, and a tokenizer that adds one too: keep one.
    bos = tokenizer.bos_token
    if bos and text.startswith(bos) and len(ids) >= 2 and ids[0] == ids[1]:
        ids = ids[1:]
    return ids


def _install_error_handlers(app: FastAPI) -> None:
    def error(e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return error(e)

    @app.exception_handler(UserError)
    async def user_error(request: Request, e: UserError):
        return error(ApiError(str(e)))

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, e: Unavailable):
        return error(ApiError(str(e), status=503, type="server_error", code="server_overloaded"))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):  # 404, 405, …
        return error(ApiError(str(e.detail), status=e.status_code))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):
        return error(ApiError(f"internal error: {e}", status=500, type="server_error"))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, e: RequestValidationError):
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:] if not _is_union_member(part))
        return error(ApiError(f"{where}: {first['msg']}" if where else first["msg"], param=where or None))


def _is_union_member(loc_part) -> bool:
    # pydantic names the member of a union that failed: ("body", "prompt", "list[int]", 0)
    return isinstance(loc_part, str) and (loc_part in {"str", "int", "float", "bool"} or "[" in loc_part)
