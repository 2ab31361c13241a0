"""Every error the server answers, in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

import json

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from llmc.errors import UserError

from .loop import Unavailable
from .protocol import ApiError


def install_error_handlers(app: FastAPI) -> None:
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
        return error(invalid_body_error(e.errors()))


def invalid_body_error(errors) -> ApiError:
    """The first problem pydantic found, naming its field; an unknown field as OpenAI words it."""
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"][1:] if not _is_union_member(part))
    if first["type"] == "extra_forbidden":
        return ApiError(f"Unrecognized request argument supplied: {where}", param=where, code="unknown_field")
    return ApiError(f"{where}: {first['msg']}" if where else first["msg"], param=where or None)


def _is_union_member(loc_part) -> bool:
    # pydantic names the member of a union that failed: ("body", "prompt", "list[int]", 0)
    return isinstance(loc_part, str) and (loc_part in {"str", "int", "float", "bool"} or "[" in loc_part)


async def send_error(send, error: ApiError, headers: tuple = ()) -> None:
    """Answer with `error` from ASGI middleware, before any route has run."""
    body = json.dumps(error.body()).encode()
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})
