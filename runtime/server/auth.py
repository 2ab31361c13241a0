"""`--api-key`: requests to /v1/* must carry `Authorization: Bearer KEY`; others (health, metrics,
tokenize, version) stay open, as in vLLM."""

import hmac

from .handlers import send_error
from .protocol import ApiError


class ApiKeyAuth:
    """ASGI middleware: 401 in OpenAI's error shape for a /v1/* request without the key."""

    def __init__(self, app, api_key: str):
        self.app = app
        self._expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v1/") or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self._expected):
            return await self.app(scope, receive, send)
        error = ApiError("Incorrect API key provided: send it as `Authorization: Bearer KEY`.",
                         status=401, code="invalid_api_key")
        await send_error(send, error, ((b"www-authenticate", b"Bearer"),))
