"""The stream socket PIOPIY opens for each call: token check, frame decoding, one CallSession."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from agent.call import CallSession
from agent.logs import for_call
from agent.record_writer import store_unreachable
from agent.runtime import Runtime
from agent.security import TokenError
from agent.telephony.piopiy import StreamDecoder

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
STORE_READ_S = 1.0
"""How long a new stream waits for the store to tell its call's cmiuuid (the call goes on without)."""


async def stream_socket(ws: WebSocket) -> None:
    """Serve one call's stream from socket open to close; the record is saved however it ends."""
    runtime: Runtime = ws.app.state.runtime
    q = ws.query_params
    call_id, bot_name = q.get("call", ""), q.get("bot", "")
    host = ws.client.host if ws.client else None
    await ws.accept()
    refusal = runtime.refusal(host, platform=True)
    if refusal is not None:
        log.warning("stream refused for call %r: %s (from %s)", call_id[:64], refusal, host)
        await ws.close(POLICY_VIOLATION, refusal.replace("_", " "))
        return
    try:
        runtime.tokens.verify(call_id, bot_name, q.get("exp", ""), q.get("token", ""))
    except TokenError as exc:
        runtime.auth_failed(host, "stream")
        log.warning("stream refused for call %r: %s (from %s)", call_id[:64], exc, host)
        await ws.close(POLICY_VIOLATION, "invalid stream token")
        return
    for_call(call_id)  # every log line of this call, and of the tasks it starts, names it
    bot = runtime.settings.bots.get(bot_name)
    if bot is None or call_id in runtime.sessions:
        why = "unknown bot" if bot is None else "call already streaming"
        log.warning("stream refused for call %s: %s", call_id, why)
        await ws.close(POLICY_VIOLATION, why)
        return

    row = {
        "bot": bot_name,
        "from_number": q.get("from"),
        "to_number": q.get("to"),
        "status": "answered",
        "started_at": time.time(),
        "sample_rate": bot.stream.voice_quality,
    }
    # In the call's lane of writes (after answer_url's, when it was answered here): never waits for a
    # store that is away.
    await runtime.writer.write(call_id, lambda: runtime.store.ensure_call(call_id, **row), "call")
    session = CallSession(
        runtime,
        call_id=call_id,
        bot_name=bot_name,
        bot=bot,
        send_text=ws.send_text,
        cmiuuid=await _cmiuuid_of(runtime, call_id),
        caller_number=q.get("from", ""),
        called_number=q.get("to", ""),
    )
    runtime.register(session)
    decoder = StreamDecoder()
    max_frame = runtime.settings.service.security.max_frame_bytes
    reason, dropped = "socket_closed", False
    try:
        await session.start()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1005)
                reason, dropped = f"socket_closed_{code}", code not in (1000, 1001)
                break
            data, text = message.get("bytes"), message.get("text")
            size = len(data) if data is not None else len(text or "")
            if size > max_frame:
                log.warning(
                    "call %s: %d-byte frame over the %d-byte limit; closing", call_id, size, max_frame
                )
                await session.record.event("stream", "frame_too_large", {"bytes": size, "limit": max_frame})
                reason = "frame_too_large"
                runtime.metrics.error(bot_name, "stream", reason)
                if ws.application_state == WebSocketState.CONNECTED:  # else the peer is gone already
                    with contextlib.suppress(WebSocketDisconnect):
                        await ws.close(MESSAGE_TOO_BIG, "frame too large")
                break
            if data is not None:
                session.on_audio(decoder.feed_bytes(data))
            elif text is not None:
                await session.on_text(decoder.feed_text(text))
    except WebSocketDisconnect as exc:
        reason, dropped = f"socket_closed_{exc.code}", exc.code not in (1000, 1001)
    except Exception:
        log.exception("call %s: stream failed", call_id)
        reason, dropped = "stream_error", True
        runtime.metrics.error(bot_name, "stream", reason)
    finally:
        await session.close(reason, dropped=dropped)


async def _cmiuuid_of(runtime: Runtime, call_id: str) -> str | None:
    """PIOPIY's id of the call: known here when this worker answered it, else from the store (None while
    the store is away: a text frame or an event may still tell it)."""
    known = runtime.recent.cmiuuid(call_id)
    if known is not None:
        return known
    try:
        async with asyncio.timeout(STORE_READ_S):
            return await runtime.store.cmiuuid_of(call_id)
    except Exception as exc:
        if not store_unreachable(exc):
            raise
        log.warning("call %s: its cmiuuid is unknown for now (the store is away: %s)", call_id, exc)
        return None
