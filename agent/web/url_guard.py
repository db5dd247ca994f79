"""Refuse any request whose URL carries a NUL character (`%00`), before a route hands it to the store.

No call id, bot, status or search text can hold one (PostgreSQL refuses NUL in text and raises, which
was a 500 on `/dashboard/calls/%00` and `/api/calls?bot=%00`), so it is bad input: a 400 for HTTP,
and a close with 1008 for a socket.
"""

from __future__ import annotations

import json
import logging
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)


def carries_nul(scope: Scope) -> bool:
    """Whether the request's path or query string holds a NUL character, encoded or not."""
    path = str(scope.get("path", ""))
    query = bytes(scope.get("query_string", b""))
    return "\x00" in path or b"\x00" in query or b"\x00" in unquote_to_bytes(query.replace(b"+", b" "))


class NulGuard:
    """ASGI middleware: requests and socket handshakes with a NUL in their URL never reach the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not carries_nul(scope):
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("unknown", 0)
        log.warning("refused %s from %s: a NUL character in the URL", scope["type"], client[0])
        if scope["type"] == "websocket":  # accepted, then closed 1008, like any refused socket of ours
            if (await receive())["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1008, "reason": "a NUL character in the URL"})
            return
        body = json.dumps({"error": "bad request", "detail": "the URL holds a NUL character (%00)"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})
