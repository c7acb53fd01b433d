"""The web dashboard at ``/ui/``: a single page of static files that speaks the REST API.

The page holds no rule and no secret: it sends the user's bearer token (typed in, kept in the
tab's ``sessionStorage``) to ``/api/v1`` like any other client, and the REST API decides what
that user may see and do. This module only serves the files shipped in ``static/`` with headers
that keep the page from running anything it did not ship: a Content-Security-Policy without
inline scripts, inline styles or any remote origin, no framing, no MIME sniffing, no referrer.
See docs/operations-ui.md.
"""

from __future__ import annotations

from pathlib import Path

from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CSP", "STATIC", "dashboard"]

STATIC = Path(__file__).resolve().parent / "static"

#: Scripts, styles, images and API calls from this origin only; nothing inline (no ``<script>``
#: bodies, no ``onerror=`` attributes, no ``style=``), no plugins, no framing, no form posts away.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cache-control", b"no-cache"),
]


class _SecurityHeaders:
    """Adds :data:`_HEADERS` to every response of the wrapped app (errors included)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in _HEADERS}
                kept = [(n, v) for n, v in message.get("headers", []) if n.lower() not in names]
                message = {**message, "headers": [*kept, *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def dashboard(directory: Path = STATIC) -> ASGIApp:
    """The ASGI app to mount at ``/ui``: ``index.html`` for ``/ui/``, the files beside it."""
    return _SecurityHeaders(StaticFiles(directory=directory, html=True))
