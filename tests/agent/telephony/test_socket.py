"""The carrier-neutral stream socket's edges that a whole call cannot reach on purpose."""

from __future__ import annotations

from starlette.websockets import WebSocketDisconnect

from agent.telephony import socket
from agent.telephony.socket import POLICY_VIOLATION


class GoneClient:
    """A socket whose client left while the service was checking its stream."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str]] = []

    async def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))
        raise WebSocketDisconnect(code=1006)


async def test_refusing_a_stream_whose_client_has_left_is_no_error() -> None:
    ws = GoneClient()
    await socket._refuse(ws, POLICY_VIOLATION, "call already streamed")  # type: ignore[arg-type]
    assert ws.closes == [(POLICY_VIOLATION, "call already streamed")]
