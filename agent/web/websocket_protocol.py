"""uvicorn's WebSocket protocol (websockets, sans-I/O), with two gaps closed that anyone could use
(no token needed: both happen before the app checks it).

- A text frame that is not UTF-8: uvicorn (0.54) logs a traceback for each, and when the peer's close
  frame arrives in the same read it tries to close a closing connection: `InvalidState` escapes and
  asyncio logs a fatal error. Here the frame ends the connection with 1007 and one warning line.
- A handshake websockets refuses itself (a request line over 8 KB, headers too large, not HTTP): it
  queues a 414/431 (or EOF) that uvicorn never sends, so the connection stays open, unanswered, until
  the client gives up. Here the answer is sent and the connection closed.
"""

from __future__ import annotations

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode
from websockets.protocol import State

INVALID_DATA = CloseCode.INVALID_DATA  # 1007


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """Pass as `uvicorn.Config(ws=WebSocketProtocol)`: the stock protocol, but invalid UTF-8 is a 1007."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        refused = self.conn.handshake_exc
        if refused is not None and not self.handshake_initiated and not self.transport.is_closing():
            self.logger.warning("WebSocket handshake from %s refused: %s", self.client, refused)
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            try:  # decoded twice (here and by uvicorn): text frames are rare, PIOPIY's audio is binary
                b"".join(self.frames).decode()
            except UnicodeDecodeError:
                self.frames = []
                self.logger.warning(
                    "WebSocket from %s sent text that is not UTF-8: closed (1007)", self.client
                )
                self._close_invalid()
                return
        super().send_receive_event_to_app()

    def _close_invalid(self) -> None:
        if self.conn.state is State.OPEN:
            self.conn.send_close(INVALID_DATA, "text frame is not valid UTF-8")
        close = self.conn.close_sent
        code = close.code if close is not None else int(INVALID_DATA)
        reason = close.reason if close is not None else ""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
