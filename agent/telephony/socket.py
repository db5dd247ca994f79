"""The stream socket a carrier opens for each call: token check, the call's claim, the call's own clock
(intake), frames decoded by the carrier's link into one CallSession. Carrier-neutral: the carrier's
routes (e.g. agent/telephony/piopiy/routes.py) serve it with their own link factory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from agent.call.session import CallSession
from agent.config.base import number_or_none
from agent.config.bot import BotConfig
from agent.records.record_writer import store_unreachable
from agent.security import TokenError, is_call_id
from agent.telephony.carrier import Audio, LinkFactory
from agent.telephony.intake import StreamIntake
from agent.worker.logs import for_call
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)

NORMAL_CLOSURE = 1000
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
CLAIM_TIMEOUT_S = 3.0
"""How long a stream waits for the store to confirm that its call never streamed."""


async def stream_socket(ws: WebSocket, make_link: LinkFactory) -> None:
    """Serve one call's stream from socket open to close, through the link `make_link` builds for it;
    the record is saved however it ends."""
    runtime: Runtime = ws.app.state.runtime
    q = ws.query_params
    call_id, bot_name = q.get("call", ""), q.get("bot", "")
    caller, called = q.get("from", ""), q.get("to", "")
    host = ws.client.host if ws.client else None
    await ws.accept()
    opened_at = time.monotonic()  # the call's own clock starts here (see agent/telephony/intake.py)
    refusal = runtime.refusal(host, platform=True)
    if refusal is not None:
        log.warning("stream refused for call %r: %s (from %s)", call_id[:64], refusal, host)
        await _refuse(ws, POLICY_VIOLATION, refusal.replace("_", " "))
        return
    try:
        if not is_call_id(call_id):  # before anything: the id names the call's recording files
            raise TokenError("malformed call id")
        runtime.tokens.verify(call_id, bot_name, q.get("exp", ""), q.get("token", ""), caller, called)
    except TokenError as exc:
        runtime.auth_failed(host, "stream")
        log.warning("stream refused for call %r: %s (from %s)", call_id[:64], exc, host)
        await _refuse(ws, POLICY_VIOLATION, "invalid stream token")
        return
    for_call(call_id)  # every log line of this call, and of the tasks it starts, names it
    bot = runtime.settings.bots.get(bot_name)
    if bot is None or call_id in runtime.calls.sessions:
        why = "unknown bot" if bot is None else "call already streaming"
        log.warning("stream refused for call %s: %s", call_id, why)
        await _refuse(ws, POLICY_VIOLATION, why)
        return
    outcome, call = await _claim(runtime, call_id, bot_name, bot, caller, called)
    if outcome == "taken":
        runtime.auth_failed(host, "stream")  # a replayed ws_url, like a token used twice here
        log.warning("stream refused for call %s: it has streamed or ended already (from %s)", call_id, host)
        await _refuse(ws, POLICY_VIOLATION, "call already streamed")
        return
    if outcome == "unconfirmed":
        log.warning("stream refused for call %s: the store cannot confirm it never streamed", call_id)
        await _refuse(ws, TRY_AGAIN_LATER, "store unavailable")
        return

    session = CallSession(
        runtime,
        call_id=call_id,
        bot_name=bot_name,
        bot=bot,
        link=make_link(ws.send_text, bot.stream.voice_quality, call_id=call_id),
        cmiuuid=call.get("cmiuuid"),
        caller_number=call.get("from") or "",
        called_number=call.get("to") or "",
    )
    runtime.calls.register(session)
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
            if data is None and text is None:
                continue
            intake.frame(time.monotonic())  # the stream is alive, even while its audio is held back
            inbound = session.link.decode(data if data is not None else str(text))
            if isinstance(inbound, Audio):
                samples = len(inbound.pcm) // 2
                now = time.monotonic()
                hold_s = intake.hold_s(samples, now)
                if hold_s > 0:  # far ahead of real time: read no faster than that (TCP slows the peer)
                    if not intake.paced:
                        await _paced(session, intake, samples, now, hold_s)
                    await asyncio.sleep(hold_s)
                intake.audio(samples, time.monotonic())
                session.on_audio(inbound.pcm)
            else:
                await session.on_text(inbound)
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
        "from_number": number_or_none(caller),
        "to_number": number_or_none(called),
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


async def _paced(session: CallSession, intake: StreamIntake, samples: int, now: float, hold_s: float) -> None:
    """The first time a call's audio runs too far ahead: recorded, counted and logged once. The figures
    are those the decision was taken on (`now`, `hold_s`), so the lead recorded is over the limit."""
    intake.paced = True
    info = {
        "lead_s": round(intake.lead_s(now) + samples / intake.sample_rate, 3),
        "max_lead_s": intake.max_lead_s,
        "hold_s": round(hold_s, 3),
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


async def _refuse(ws: WebSocket, code: int, reason: str) -> None:
    """Close a stream we will not serve; a client that has left already (a carrier that hung up while
    we checked) is no error."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.close(code, reason)
