"""PIOPIY's routes: answer_url, the Event URL, the CDR URL and DTMF callbacks (/piopiy/*), and the stream
socket (/stream) its calls open, served with PIOPIY's link.

Each needs the webhook secret (agent/web/auth.py), reads its body leniently (a 400 naming what is wrong,
never a 500) and stores what it received before acting on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from agent.records.record_writer import store_unreachable
from agent.telephony.carrier import CallNews
from agent.telephony.piopiy.answer import answer_pcmo
from agent.telephony.piopiy.codec import PiopiyFormatError, strict_json
from agent.telephony.piopiy.link import PiopiyLink, call_news
from agent.telephony.piopiy.webhooks import (
    AnswerRequest,
    CallEvent,
    CdrRecord,
    DtmfCallback,
    cdr_is_newer,
    parse_body,
)
from agent.telephony.socket import stream_socket
from agent.telephony.unstreamed import CDR_BEFORE_STREAM, HANGUP_BEFORE_STREAM, close_unstreamed
from agent.web.auth import webhook_client
from agent.web.errors import HttpError
from agent.web.request_body import BodyTooLarge, BodyTooSlow, read_body
from agent.worker.commands import Keypad, News
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

router = APIRouter()


@router.websocket("/stream")
async def piopiy_stream(ws: WebSocket) -> None:
    """The socket each call's answer (a `stream` PCMO's ws_url) sends PIOPIY to."""
    await stream_socket(ws, PiopiyLink)


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a webhook that reads its own body (leniently, a 400 when malformed): the body's model."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/piopiy/answer", openapi_extra=_json_body_doc(AnswerRequest))
async def answer(request: Request) -> JSONResponse:
    rt = webhook_client(request)
    body = await _json_body(request, rt)
    call = _parse(AnswerRequest, body, "malformed answer_url body")
    return JSONResponse(await answer_pcmo(rt, call, body))


@router.post("/piopiy/events", openapi_extra=_json_body_doc(CallEvent))
async def events(request: Request) -> dict[str, Any]:
    rt = webhook_client(request)
    body = await _json_body(request, rt)
    event = _parse(CallEvent, body, "malformed event")
    call_id = _known_call(rt, event.cmiuuid) or await rt.store.call_id_for(cmiuuid=event.cmiuuid)
    if call_id is None and event.request_id:
        # Outbound calls are known by request_id until PIOPIY tells us their cmiuuid.
        call_id = await rt.store.call_id_for(request_id=event.request_id)
        if call_id and event.cmiuuid:
            await rt.store.update_call(call_id, cmiuuid=event.cmiuuid)
    stored = await _store_platform_event(rt, call_id, event.delivery_key(body), event, body)
    if not stored:  # PIOPIY delivered it again: stored and acted on once
        log.info("event %s of %s delivered again: ignored", event.status[:64], event.cmiuuid)
        return {"ok": True, "call_id": call_id, "duplicate": True}
    session = rt.calls.session_for_cmiuuid(event.cmiuuid)  # again: the call may have ended while we stored
    news = call_news(event)
    if session is not None:
        await session.on_news(news)
    elif call_id and rt.cluster is not None and await rt.calls.route(call_id, News(news, carrier_body=body)):
        pass  # the call lives on another worker: it got the event
    elif call_id and event.status_lower == "hangup":
        if not await close_unstreamed(rt.store, call_id, HANGUP_BEFORE_STREAM, rt.metrics.call_ended):
            # PIOPIY usually closes the socket before it posts `hangup`: say who ended the call. In
            # the call's lane of writes: its closing update may still be waiting there (a slow store).
            await rt.writer.write(call_id, lambda: rt.store.mark_caller_hangup(call_id), "caller hangup")
    return {"ok": True, "call_id": call_id, "duplicate": False}


@router.post("/piopiy/cdr", openapi_extra=_json_body_doc(CdrRecord))
async def cdr(request: Request) -> dict[str, Any]:
    rt = webhook_client(request)
    body = await _json_body(request, rt)
    record = _parse(CdrRecord, body, "malformed CDR")
    first, newest = await rt.store.upsert_cdr(
        record.cmiuuid, record.leg, body, time.time(), newer=cdr_is_newer
    )
    if not newest:
        log.info(
            "CDR of %s leg %s: an older or repeated delivery, kept the newer", record.cmiuuid, record.leg
        )
    call_id = await rt.store.call_id_for(cmiuuid=record.cmiuuid)
    if call_id is None and record.request_id:
        call_id = await rt.store.call_id_for(request_id=record.request_id)
    if call_id is not None:  # the call is over: if its stream never connected, it never will
        await close_unstreamed(rt.store, call_id, CDR_BEFORE_STREAM, rt.metrics.call_ended)
    return {"ok": True, "duplicate": not first, "newest": newest}


@router.post("/piopiy/dtmf", openapi_extra=_json_body_doc(DtmfCallback))
async def dtmf(request: Request) -> dict[str, Any]:
    rt = webhook_client(request)
    body = await _json_body(request, rt)
    digits = _parse(DtmfCallback, body, "malformed DTMF callback")
    call_id = _known_call(rt, digits.call_uuid) or await rt.store.call_id_for(cmiuuid=digits.call_uuid)
    await _store_event(rt, call_id, digits.call_uuid, "dtmf", body)
    session = rt.calls.session_for_cmiuuid(digits.call_uuid)
    if session is not None:
        await session.on_dtmf(digits.dtmf)
        return {"ok": True, "delivered": True}
    owner = await rt.calls.route(call_id, Keypad(digits.dtmf)) if call_id else None
    return {"ok": True, "delivered": owner is not None}


def forwarded_event_news(body: Any) -> CallNews | None:
    """What an event forwarded by a worker of the previous release (PIOPIY's body alone) says."""
    return call_news(parse_body(CallEvent, body))


def _parse(model: type[M], body: Any, error: str) -> M:
    """A webhook body as its typed model, or a 400 naming every bad field."""
    try:
        return parse_body(model, body)
    except PiopiyFormatError as exc:
        raise HttpError(400, error, str(exc)) from None


async def _json_body(request: Request, rt: Runtime) -> Any:
    """The body as strict JSON, within the size and time limits (413, 408), or a 400."""
    service = rt.settings.service
    try:
        raw = await read_body(
            request, max_bytes=service.security.max_body_bytes, timeout_s=service.server.body_timeout_s
        )
    except BodyTooLarge as exc:
        raise HttpError(413, "body too large", str(exc), close=True) from None
    except BodyTooSlow as exc:
        raise HttpError(408, "body too slow", str(exc), close=True) from None
    try:
        return strict_json(raw)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "body is not valid JSON", str(exc)[:200]) from None


def _known_call(rt: Runtime, cmiuuid: str | None) -> str | None:
    """Our id of a call live or answered here lately, known without the store."""
    session = rt.calls.session_for_cmiuuid(cmiuuid)
    return session.call_id if session is not None else rt.recent.call_id(cmiuuid)


async def _store_platform_event(
    rt: Runtime, call_id: str | None, delivery: str, event: CallEvent, body: Any
) -> bool:
    """Store a PIOPIY event once per delivery; False for a delivery stored before. A call known here
    gets it in its lane of record writes while the store is away (kept, in order with the call's own
    writes, and stored once when written); others need the store now (else a 500, and PIOPIY retries)."""
    at = time.time()

    def add() -> Awaitable[bool]:
        return rt.store.add_platform_event(
            delivery, status=event.status, payload=body, at=at, call_id=call_id, cmiuuid=event.cmiuuid
        )

    known = call_id is not None and (call_id in rt.calls.sessions or rt.recent.cmiuuid(call_id) is not None)
    if not known or not rt.writer.waiting_calls:
        try:
            return await add()
        except Exception as exc:
            if not (known and store_unreachable(exc)):
                raise
    assert call_id is not None
    await rt.writer.write(call_id, add, f"piopiy {event.status}")
    return True


async def _store_event(rt: Runtime, call_id: str | None, cmiuuid: str | None, status: str, body: Any) -> None:
    """Store a platform callback. A call known here gets it in its lane of record writes (kept while the
    store is away, in order with the call's own writes); others need the store now (else a 500, and
    PIOPIY retries)."""
    at = time.time()

    async def add() -> None:
        await rt.store.add_event(
            source="piopiy", status=status, payload=body, at=at, call_id=call_id, cmiuuid=cmiuuid
        )

    if call_id is not None and (call_id in rt.calls.sessions or rt.recent.cmiuuid(call_id) is not None):
        await rt.writer.write(call_id, add, f"piopiy {status}")
    else:
        await add()
