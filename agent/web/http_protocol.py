"""uvicorn's HTTP/1.1 protocol (h11) with the deadlines it lacks: headers and bodies must arrive in time.

uvicorn times out idle kept-alive connections, but never a request being received: a client that sends
its headers or its body a byte at a time (slowloris) held a connection for as long as it liked, and a
few hundred such clients exhaust a worker. Here, per connection:

- the request line and headers must be complete within `server.header_timeout_s` of the connection
  (or, on a kept-alive connection, of the next request's first byte); else 408 and the connection
  is closed. It also covers a WebSocket's upgrade request, and a client that connects and says nothing;
- a request body must be complete within `server.body_timeout_s` of its headers, plus a short grace:
  the service's own body reads (agent/web/request_body.py) answer a JSON 408 at `body_timeout_s`; this is
  the backstop for every other route, and for a client still sending after it was answered.

The ASGI app never sees a request before its headers are complete, which is why this lives here.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16384
"""The most of an unfinished request line and headers kept per connection (h11's incomplete-event
limit): past it, 400 at once. Cookies and the stream ws_url's query fit many times over."""
BODY_GRACE_S = 2.0
"""The service's own 408 (at body_timeout_s) comes first; the protocol cuts a request this much later."""
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


@dataclass(frozen=True)
class RequestDeadlines:
    """How long a client may take to send a request's headers, and then its body."""

    header_timeout_s: float
    body_timeout_s: float


def http_protocol(deadlines: RequestDeadlines) -> type[DeadlineH11Protocol]:
    """The protocol class to pass as `uvicorn.Config(http=...)` (uvicorn builds one per connection)."""
    return type("DeadlineH11Protocol", (DeadlineH11Protocol,), {"deadlines": deadlines})


class DeadlineH11Protocol(H11Protocol):
    """H11Protocol that closes a connection whose request headers or body arrive too slowly (408)."""

    deadlines: ClassVar[RequestDeadlines] = RequestDeadlines(header_timeout_s=5.0, body_timeout_s=10.0)
    _deadline: asyncio.TimerHandle | None = None
    _waiting_for: str = ""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers")  # a client that connects and says nothing is a slowloris too

    def data_received(self, data: bytes) -> None:
        if self._deadline is None and self.conn.their_state is h11.IDLE:
            self._arm("headers")  # the next request on a kept-alive connection has begun
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next pipelined request
        self._follow_request()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._disarm()  # the socket's own protocol takes the connection over
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _follow_request(self) -> None:
        """Move the deadline along with h11's view of the request being received."""
        if self.transport.get_protocol() is not self:
            self._disarm()  # upgraded to a WebSocket
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if self._waiting_for != "body":
                self._arm("body")
        elif state is not h11.IDLE or self._waiting_for != "headers":
            self._disarm()  # the request is in (or the connection is done): the app's time, not the client's

    def _arm(self, waiting_for: str) -> None:
        self._disarm()
        limits = self.deadlines
        delay = limits.header_timeout_s if waiting_for == "headers" else limits.body_timeout_s + BODY_GRACE_S
        self._waiting_for = waiting_for
        self._deadline = self.loop.call_later(delay, self._too_slow, waiting_for, delay)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._waiting_for = None, ""

    def _too_slow(self, waiting_for: str, after_s: float) -> None:
        self._deadline, self._waiting_for = None, ""
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
        cycle = self.cycle if waiting_for == "body" else None
        log.warning("%s: request %s not received within %.0f s: closed (408)", client, waiting_for, after_s)
        if cycle is None or not cycle.response_started:
            body = b'{"error": "request too slow", "detail": "request %s not received within %g s"}' % (
                waiting_for.encode(),
                after_s,
            )
            self.transport.write(_TIMEOUT_408 % (len(body), body))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() gets http.disconnect; its late writes are dropped
            cycle.message_event.set()
        self.transport.close()
