"""A small HTTP backend for the bots' tools (orders, balances, tickets), served over real HTTP.

    with FakeToolBackend(delay_s=1.5) as backend:
        bot = backend.point(bots["order_line"])   # its tools now call this backend
        ...
        assert backend.requests[0].raw_path == "/orders/12345"

The shipped bots' tools name http://127.0.0.1:8090; `point()` swaps that base for this server's.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent.config.bot import BotConfig
from testkit.servers import Message, Receive, Scope, Send, ServedApp

_POLL_S = 0.02
SHIPPED_BASE_URL = "http://127.0.0.1:8090"

DEFAULT_ORDERS: dict[str, dict[str, str]] = {
    "12345": {"status": "shipped", "eta": "Friday"},
    "55555": {"status": "out for delivery", "eta": "today"},
    "98765": {"status": "being packed", "eta": "next Monday"},
}
DEFAULT_BALANCES: dict[str, str] = {"919876543210": "12,500"}


@dataclass(frozen=True)
class BackendRequest:
    """One request the backend received."""

    method: str
    raw_path: str  # as sent, still percent-encoded
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


class FakeToolBackend(ServedApp):
    """GET /orders/{id}, GET /accounts/{id}/balance, POST /tickets, POST /notify/{name} (webhooks of
    `notify` actions); 404 for unknown ids.

    `delay_s` holds every answer back (fillers, tool timeouts); tables may be edited while it runs.
    """

    def __init__(
        self,
        *,
        orders: dict[str, dict[str, str]] | None = None,
        balances: dict[str, str] | None = None,
        delay_s: float = 0.0,
        host: str = "127.0.0.1",
    ) -> None:
        super().__init__(host=host)
        self.orders = dict(DEFAULT_ORDERS if orders is None else orders)
        self.balances = dict(DEFAULT_BALANCES if balances is None else balances)
        self.delay_s = delay_s
        self.notify_statuses: list[int] = []
        """Statuses the next `POST /notify/{name}` requests answer with, in order (then 200)."""
        self.set_cookie: str | None = None
        """A `Set-Cookie` value every answer carries (a backend's session), None: no cookie."""
        self._requests: list[BackendRequest] = []
        self._lock = threading.Lock()
        self._routes = self._build_app()
        self.app = self._recorded

    @property
    def requests(self) -> list[BackendRequest]:
        """Requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def point(self, bot: BotConfig) -> BotConfig:
        """A copy of `bot` whose tools and webhooks call this backend instead of the shipped base URL."""
        tools = [
            t.model_copy(update={"url": t.url.replace(SHIPPED_BASE_URL, self.base_url)}) for t in bot.tools
        ]
        hooks = {
            name: h.model_copy(update={"url": h.url.replace(SHIPPED_BASE_URL, self.base_url)})
            for name, h in bot.webhooks.items()
        }
        return bot.model_copy(update={"tools": tools, "webhooks": hooks})

    async def _recorded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every HTTP request is recorded as sent (unmatched paths too), then held `delay_s`."""
        if scope["type"] != "http":
            await self._routes(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        with self._lock:
            self._requests.append(
                BackendRequest(
                    method=scope["method"],
                    raw_path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
                    query=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
                    headers=headers,
                    body=json.loads(body) if body else None,
                )
            )
        held = self.delay_s
        while held > 0 and not self.stopping.is_set():  # in steps, so a stop never waits on it
            step = min(_POLL_S, held)
            await asyncio.sleep(step)
            held -= step
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._routes(scope, replay, self._with_cookie(send))

    def _with_cookie(self, send: Send) -> Send:
        cookie = self.set_cookie
        if cookie is None:
            return send

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())],
                }
            await send(message)

        return send_with_cookie

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="fake tool backend")

        @app.get("/orders/{order_id}")
        async def order(order_id: str) -> JSONResponse:
            found = self.orders.get(order_id)
            if found is None:
                return JSONResponse({"error": f"no order {order_id}"}, status_code=404)
            return JSONResponse({"order_id": order_id, **found})

        @app.get("/accounts/{account_id}/balance")
        async def balance(account_id: str) -> JSONResponse:
            found = self.balances.get(account_id)
            if found is None:
                return JSONResponse({"error": f"no account {account_id}"}, status_code=404)
            return JSONResponse({"account_id": account_id, "balance": found, "currency": "INR"})

        @app.post("/tickets")
        async def ticket(request: Request) -> JSONResponse:
            body = await request.json()
            with self._lock:
                number = len(self._requests)
            return JSONResponse({"ticket_id": f"T{1000 + number}", "summary": body.get("summary", "")})

        @app.post("/notify/{name}")
        async def notified(name: str) -> JSONResponse:
            with self._lock:
                status = self.notify_statuses.pop(0) if self.notify_statuses else 200
            return JSONResponse({"received": name}, status_code=status)

        @app.get("/not-json")
        async def not_json() -> JSONResponse:
            return JSONResponse(["a", "list", "not", "an", "object"])

        return app
