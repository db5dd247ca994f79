"""The stream socket PIOPIY opens for each call: token check, the call's claim, frame decoding, one
CallSession."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from agent.bot import BotConfig
from agent.call import CallSession
from agent.logs import for_call
from agent.record_writer import store_unreachable
from agent.runtime import Runtime
from agent.security import TokenError, is_call_id
from agent.telephony.piopiy import StreamDecoder
from agent.telephony.piopiy_webhooks import phone_number

log = logging.getLogger(__name__)

POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
CLAIM_TIMEOUT_S = 3.0
"""How long a stream waits for the store to confirm that its call never streamed."""


async def stream_socket(ws: WebSocket) -> None:
    """Serve one call's stream from socket open to close; the record is saved however it ends."""
    runtime: Runtime = ws.app.state.runtime
    q = ws.query_params
    call_id, bot_name = q.get("call", ""), q.get("bot", "")
    caller, called = q.get("from", ""), q.get("to", "")
    host = ws.client.host if ws.client else None
    await ws.accept()
    refusal = runtime.refusal(host, platform=True)
    if refusal is not None:
        log.warning("stream refused for call %r: %s (from %s)", call_id[:64], refusal, host)
        await ws.close(POLICY_VIOLATION, refusal.replace("_", " "))
        return
    try:
        if not is_call_id(call_id):  # before anything: the id names the call's recording files
            raise TokenError("malformed call id")
        runtime.tokens.verify(call_id, bot_name, q.get("exp", ""), q.get("token", ""), caller, called)
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
    outcome, call = await _claim(runtime, call_id, bot_name, bot, caller, called)
    if outcome == "taken":
        runtime.auth_failed(host, "stream")  # a replayed ws_url, like a token used twice here
        log.warning("stream refused for call %s: it has streamed or ended already (from %s)", call_id, host)
        await ws.close(POLICY_VIOLATION, "call already streamed")
        return
    if outcome == "unconfirmed":
        log.warning("stream refused for call %s: the store cannot confirm it never streamed", call_id)
        await ws.close(TRY_AGAIN_LATER, "store unavailable")
        return

    session = CallSession(
        runtime,
        call_id=call_id,
        bot_name=bot_name,
        bot=bot,
        send_text=ws.send_text,
        cmiuuid=call.get("cmiuuid"),
        caller_number=call.get("from") or "",
        called_number=call.get("to") or "",
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


async def _claim(
    runtime: Runtime, call_id: str, bot_name: str, bot: BotConfig, caller: str, called: str
) -> tuple[Literal["claimed", "taken", "unconfirmed"], dict[str, Any]]:
    """Claim the call in the store: `claimed` with its numbers and cmiuuid (the store's, not the
    query's), `taken` when it has streamed or ended already (on any worker, before any restart), or
    `unconfirmed` when the store cannot say.

    With the store unreachable, a call this process answered (its token was issued here and is
    unused) goes on from memory and its claim is kept and retried with its other writes: calls are
    answered while the database restarts. Any other call is refused: only the store knows its past.
    """
    now = time.time()
    served_by = runtime.incarnation.as_meta()
    absent = {
        "bot": bot_name,
        "from_number": phone_number(caller),
        "to_number": phone_number(called),
        "sample_rate": bot.stream.voice_quality,
    }

    def attempt() -> Any:
        return runtime.store.claim_stream(call_id, connected_at=now, served_by=served_by, absent=absent)

    try:
        async with asyncio.timeout(CLAIM_TIMEOUT_S):
            call = await attempt()
    except Exception as exc:
        if not store_unreachable(exc):
            log.exception("call %s: the store refused the stream's claim", call_id)
            return "unconfirmed", {}
        if not runtime.tokens.issued_here(call_id):
            log.warning("call %s: the store is unreachable (%s) and another worker answered it", call_id, exc)
            return "unconfirmed", {}
        log.warning("call %s: the store is unreachable (%s); answered here, so it streams", call_id, exc)
        await runtime.writer.write(call_id, attempt, "stream claim")
        known = {"from": absent["from_number"], "to": absent["to_number"]}
        return "claimed", {**known, "cmiuuid": runtime.recent.cmiuuid(call_id)}
    return ("claimed", call) if call is not None else ("taken", {})
