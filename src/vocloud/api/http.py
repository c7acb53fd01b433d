"""HTTP plumbing under every route: JSON errors, the request-size limit, and a 500 that keeps
the connection.

Why a middleware of our own for unexpected exceptions: Starlette's ``ServerErrorMiddleware``
sends the 500 and then re-raises, and uvicorn answers a re-raised exception by closing the
connection, so a client with a kept-alive connection saw its next request fail too. Here the
exception is logged and turned into the JSON 500 (``{"error": "InternalError", ...}``) and the
app returns normally: the connection stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("vocloud.api")

#: ``(method, path)`` routes that read their own body in a stream and enforce their own limit.
UNLIMITED_BODY: frozenset[tuple[str, str]] = frozenset({("POST", "/api/v1/images/upload"),
                                                      ("POST", "/RPC2")})  # XML-RPC: a fault


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


async def _send_error(send: Send, status: int, code: str, message: str,
                      extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = error_body(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *(extra_headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    """The request body passed the limit while the app was reading it."""


class GuardMiddleware:
    """Outermost app-level guard: body size limit (413), NUL bytes in the path or query (400),
    and any unexpected exception -> JSON 500 without dropping the connection."""

    def __init__(self, app: ASGIApp, max_body: int = 1 << 20,
                 exempt: Callable[[str, str], bool] | None = None) -> None:
        self.app = app
        self.max_body = max_body
        self.exempt = exempt or (lambda method, path: (method, path) in UNLIMITED_BODY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if "\x00" in path or b"%00" in scope.get("query_string", b""):
            await _send_error(send, 400, "InvalidInput", "NUL bytes are not allowed in a URL")
            return
        limit = None if self.exempt(scope.get("method", ""), path) else self.max_body
        if limit is not None:
            for name, value in scope.get("headers", []):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = -1
                    if declared > limit:
                        await self._too_large(send, limit)
                        return
        state = {"started": False, "too_large": False, "read": 0}

        async def guarded_receive() -> Message:
            message = await receive()
            if limit is not None and message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:
                    state["too_large"] = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:
                return  # whatever the app makes of the cut body, the answer is 413
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception as exc:  # the one place a bug becomes a response
            if state["too_large"]:
                await self._too_large(send, limit or 0)
                return
            log.error("internal error on %s %s", scope.get("method"), path, exc_info=exc)
            if not state["started"]:
                await _send_error(send, 500, "InternalError",
                                  f"internal error: {exc.__class__.__name__} (see the daemon log)")
            return
        if state["too_large"]:
            await self._too_large(send, limit or 0)

    @staticmethod
    async def _too_large(send: Send, limit: int) -> None:
        await _send_error(send, 413, "PayloadTooLarge",
                          f"request body is larger than {limit} bytes (setting max_request_bytes)",
                          [(b"connection", b"close")])
