"""answer_url's answer: the PCMO for a new call (stream it to the bot owning the number, or the
fallback), the call's row and `answer` action, and the same answer again for a retried answer_url."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from agent.config.settings import Settings
from agent.records.record_writer import store_unreachable
from agent.telephony.piopiy.codec import (
    Pcmo,
    PiopiyFormatError,
    bridge_action,
    hangup_action,
    record_action,
    redact_tokens,
    speak_action,
    stream_action,
)
from agent.telephony.piopiy.webhooks import AnswerRequest
from agent.worker.logs import for_call
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)

STORE_WAIT_S = 1.0
"""How long answer_url waits for the store to take a new call's row before answering from memory."""


async def answer_pcmo(rt: Runtime, call: AnswerRequest, body: Any) -> Pcmo:
    """The PCMO for a new call: stream it to the bot owning the number, or the fallback. A retried
    answer_url (the same cmiuuid) finds the call's row and gets the same answer (`_answer_again`). With
    the store away it does not wait for it (see `_record_answer`): PIOPIY gets its answer while
    PostgreSQL restarts."""
    settings = rt.settings
    now = time.time()
    call_id = rt.tokens.call_id_for(call.cmiuuid)  # the same on every worker and every retry
    for_call(call_id)
    if call.from_ is None:
        log.info(
            "call %s: the caller's number %r is not a phone number: unknown",
            call.cmiuuid,
            str(body.get("from"))[:40],
        )
    bot_name = settings.service.numbers.get(call.to) if call.to else None
    bot = settings.bots.get(bot_name) if bot_name else None
    common = {"cmiuuid": call.cmiuuid, "from_number": call.from_, "to_number": call.to, "started_at": now}
    if bot is None or rt.draining:
        pcmo = _fallback_pcmo(settings, call.to)
        why = "draining" if rt.draining else "unknown_number"
        row = {
            "id": call_id,
            "status": "unrouted",
            "end_reason": why,
            "ended_at": now,
            "meta": {"answer": body},
        }
        if not await _record_answer(
            rt, call_id, {**row, **common}, pcmo, {"rule": why, "number": call.to}, now
        ):
            return await _answer_again(rt, call_id, body)
        log.warning("call %s to %s: %s, answered with the fallback PCMO", call.cmiuuid, call.to, why)
        rt.metrics.call_ended(bot_name or "unknown", "unrouted")
        return pcmo
    assert bot_name is not None
    pcmo, exp = _stream_pcmo(rt, call_id, bot_name, call.from_, call.to)
    row = {"id": call_id, "bot": bot_name, "status": "answered", "sample_rate": bot.stream.voice_quality}
    reason = {"rule": "number_routing", "bot": bot_name}
    meta = {"answer": body, "stream_exp": exp}
    if not await _record_answer(
        rt, call_id, {**row, "meta": meta, **common}, redact_tokens(pcmo), reason, now
    ):
        return await _answer_again(rt, call_id, body)
    log.info("call %s (%s → %s) routed to bot %s as %s", call.cmiuuid, call.from_, call.to, bot_name, call_id)
    return pcmo


async def _record_answer(
    rt: Runtime, call_id: str, row: dict[str, Any], pcmo: Pcmo, reason: dict[str, Any], now: float
) -> bool:
    """The new call's row and its `answer` action; False when the row exists (a retried answer_url).

    Inserted at once while the store answers, so racing retries on any worker find one row. With the
    store away (or known to be: calls are waiting for it), through the record writer instead: answered
    from memory, written in order before the call's own writes when it is back (`create_call` keeps the
    row a stream or a retry wrote meanwhile)."""
    rt.recent.answered(call_id, row.get("cmiuuid"))
    inserted = True
    if rt.writer.waiting_calls:
        await rt.writer.write(call_id, lambda: rt.store.create_call(**row), "call")
    else:
        try:
            async with asyncio.timeout(STORE_WAIT_S):
                inserted = await rt.store.insert_call(**row)
        except Exception as exc:
            if not (isinstance(exc, TimeoutError) or store_unreachable(exc)):
                raise
            log.warning("call %s: the store is away (%s); answered from memory", call_id, type(exc).__name__)
            await rt.writer.write(call_id, lambda: rt.store.create_call(**row), "call")
    if not inserted:
        return False
    await rt.writer.write(
        call_id, lambda: rt.store.add_action(call_id, "answer", pcmo, reason, now), "action"
    )
    return True


async def _answer_again(rt: Runtime, call_id: str, body: Any) -> Pcmo:
    """PIOPIY retried answer_url for a call we have: the same PCMO (the same ws_url: same call, numbers
    and token expiry), no second row; the retry is kept as a `piopiy/answer_retry` event."""
    row = await rt.store.call_fields(call_id)
    assert row is not None  # the insert found it
    bot = row["bot"] if row["status"] != "unrouted" and row["bot"] in rt.settings.bots else None
    if bot is None:
        pcmo = _fallback_pcmo(rt.settings, row["to_number"])
    else:
        exp = (row["meta"] or {}).get("stream_exp")
        exp = exp if isinstance(exp, int) and not isinstance(exp, bool) else None
        pcmo, _ = _stream_pcmo(rt, call_id, bot, row["from_number"], row["to_number"], exp)
    at = time.time()
    await rt.writer.write(
        call_id,
        lambda: rt.store.add_event(
            source="piopiy",
            status="answer_retry",
            payload=body,
            at=at,
            call_id=call_id,
            cmiuuid=row["cmiuuid"],
        ),
        "answer retry",
    )
    log.info("answer_url retried for call %s (%s): answered as before", call_id, row["status"])
    return pcmo


def _stream_pcmo(
    rt: Runtime,
    call_id: str,
    bot_name: str,
    from_number: str | None,
    to_number: str | None,
    exp: int | None = None,
) -> tuple[Pcmo, int]:
    """`[record?, stream]` for a bot's call, and its stream token's expiry."""
    ws_url, exp = rt.stream_url(
        call_id=call_id, bot=bot_name, from_number=from_number or "", to_number=to_number or "", exp=exp
    )
    opts = rt.settings.bots[bot_name].stream
    pcmo = [record_action()] if opts.record else []
    pcmo.append(
        stream_action(
            ws_url,
            listen_mode=opts.listen_mode,
            voice_quality=opts.voice_quality,
            stream_on_answer=opts.stream_on_answer,
        )
    )
    return pcmo, exp


def _fallback_pcmo(settings: Settings, to_number: str | None) -> Pcmo:
    """What a call no bot takes hears: `unknown_number`'s words, then a bridge to people or a hang-up."""
    fb = settings.service.unknown_number
    pcmo: Pcmo = [speak_action(fb.say)] if fb.say else []
    if fb.bridge_to:
        try:
            pcmo.append(
                bridge_action(to_number or "", fb.bridge_to, timeout=fb.timeout, ring_type=fb.ring_type)
            )
        except PiopiyFormatError:
            # `to` is not a usable caller id (junk from a misconfigured trunk): hang up instead of failing.
            pcmo.append(hangup_action())
    else:
        pcmo.append(hangup_action())
    return pcmo
