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
from agent.runtime import Runtime
from agent.security import TokenError
from agent.stream_intake import StreamIntake
from agent.telephony.piopiy import StreamDecoder

log = logging.getLogger(__name__)

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


async def stream_socket(ws: WebSocket) -> None:
    """Serve one call's stream from socket open to close; the record is saved however it ends."""
    runtime: Runtime = ws.app.state.runtime
    q = ws.query_params
    call_id, bot_name = q.get("call", ""), q.get("bot", "")
    host = ws.client.host if ws.client else None
    await ws.accept()
    opened_at = time.monotonic()  # the call's own clock starts here (see agent/stream_intake.py)
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

    await runtime.store.ensure_call(
        call_id,
        bot=bot_name,
        from_number=q.get("from"),
        to_number=q.get("to"),
        status="answered",
        started_at=time.time(),
        sample_rate=bot.stream.voice_quality,
    )
    session = CallSession(
        runtime,
        call_id=call_id,
        bot_name=bot_name,
        bot=bot,
        send_text=ws.send_text,
        cmiuuid=await runtime.store.cmiuuid_of(call_id),
        caller_number=q.get("from", ""),
        called_number=q.get("to", ""),
    )
    runtime.register(session)
    decoder = StreamDecoder()
    security = runtime.settings.service.security
    max_frame = security.max_frame_bytes
    intake = StreamIntake(bot.stream.voice_quality, opened_at, max_lead_s=security.max_audio_lead_s)
    reason, dropped = "socket_closed", False
    watch: asyncio.Task[None] | None = None
    try:
        await session.start()
        watch = asyncio.create_task(_watch_line(ws, session, intake), name=f"line watch {call_id}")
        while True:
            message = await ws.receive()
            if intake.timed_out:  # the watch closed an idle stream (its close is the message here)
                reason, dropped = "idle_timeout", True
                break
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
                intake.frame(time.monotonic())  # the stream is alive, even while its audio is held back
                pcm = decoder.feed_bytes(data)
                hold_s = intake.hold_s(len(pcm) // 2, time.monotonic())
                if hold_s > 0:  # far ahead of real time: read no faster than that (TCP slows the peer)
                    if not intake.paced:
                        await _paced(session, intake, len(pcm) // 2)
                    await asyncio.sleep(hold_s)
                intake.audio(len(pcm) // 2, time.monotonic())
                session.on_audio(pcm)
            elif text is not None:
                intake.frame(time.monotonic())
                await session.on_text(decoder.feed_text(text))
    except WebSocketDisconnect as exc:
        reason, dropped = f"socket_closed_{exc.code}", exc.code not in (1000, 1001)
    except Exception:
        log.exception("call %s: stream failed", call_id)
        reason, dropped = "stream_error", True
        runtime.metrics.error(bot_name, "stream", reason)
    finally:
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch
        await session.close(reason, dropped=dropped)


async def _watch_line(ws: WebSocket, session: CallSession, intake: StreamIntake) -> None:
    """While the call lasts: missing audio in an open caller turn counts as silence once it has lasted
    `end_silence_ms` (the turn ends, the bot answers), and no frame at all for `stream_idle_timeout_s`
    closes the stream. A task beside the receive loop, waking about twice a second: a timeout on each
    receive would cost every 20 ms frame a timer."""
    idle_timeout_s = session.runtime.settings.service.security.stream_idle_timeout_s
    end_silence_s = session.bot.turn_taking.end_silence_ms / 1000
    while not session.closed:  # (closed by a shutdown while the socket is still open)
        now = time.monotonic()
        in_turn = session.turns.in_turn
        if intake.idle_s(now) >= idle_timeout_s:
            intake.timed_out = True
            await _close_idle(ws, session, intake.idle_s(now))
            return
        if in_turn and intake.missing_s(now) >= end_silence_s:
            await session.on_line_silence(intake.count_silence(now))
            continue
        due_s = intake.next_check_s(
            now, idle_timeout_s=idle_timeout_s, silence_s=end_silence_s if in_turn else None
        )
        await asyncio.sleep(min(due_s, end_silence_s))  # a turn may start meanwhile: look again by then


async def _paced(session: CallSession, intake: StreamIntake, samples: int) -> None:
    """The first time a call's audio runs too far ahead: recorded, counted and logged once."""
    intake.paced = True
    now = time.monotonic()
    info = {
        "lead_s": round(intake.lead_s(now) + samples / intake.sample_rate, 2),
        "max_lead_s": intake.max_lead_s,
        "audio_s": round(intake.received_s, 2),
        "elapsed_s": round(now - intake.opened_at, 2),
    }
    log.warning(
        "call %s: caller audio %.1f s ahead of real time; read no faster than real time from here",
        session.call_id, info["lead_s"],
    )  # fmt: skip
    session.runtime.metrics.error(session.bot_name, "stream", "audio_ahead")
    await session.record.event("stream", "paced", info)


async def _close_idle(ws: WebSocket, session: CallSession, idle_s: float) -> None:
    """No frame for `security.stream_idle_timeout_s`: the stream is dead; close it (the call then ends)."""
    limit = session.runtime.settings.service.security.stream_idle_timeout_s
    log.warning("call %s: no frame for %.0f s; closing the stream", session.call_id, idle_s)
    session.runtime.metrics.error(session.bot_name, "stream", "idle_timeout")
    await session.record.event("stream", "idle_timeout", {"idle_s": round(idle_s, 1), "limit_s": limit})
    if ws.application_state == WebSocketState.CONNECTED:  # the receive loop then gets the disconnect
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the peer may be gone already
            await ws.close(NORMAL_CLOSURE, f"no frame for {limit:g} s")
