"""Reading a request body the service parses itself (webhooks, dashboard forms): bounded in size and time.

A client that declares or sends more than the limit is refused at once; one that sends its body too
slowly (a byte at a time, to hold a worker's connection) is refused when the deadline passes, however
far it got. The HTTP protocol (agent/web/http_protocol.py) cuts any request that is slower still.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """The body is (or says it is) over the size limit."""


class BodyTooSlow(Exception):
    """The body did not arrive within its deadline."""


async def read_body(request: Request, *, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, at most `max_bytes` (else BodyTooLarge), within `timeout_s` (else BodyTooSlow)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge(f"limit is {max_bytes} bytes")
    raw = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                raw += chunk
                if len(raw) > max_bytes:
                    raise BodyTooLarge(f"limit is {max_bytes} bytes")
    except TimeoutError:
        client = request.client.host if request.client else "unknown"
        log.warning(
            "%s %s from %s: body not received within %.0f s (%d bytes so far): 408",
            request.method, request.url.path, client, timeout_s, len(raw),
        )  # fmt: skip
        raise BodyTooSlow(f"send the whole body within {timeout_s:g} s") from None
    return bytes(raw)
