"""The HTTP surface: PIOPIY's answer_url, events, CDRs, DTMF callbacks, the stream socket, the call API.

Bad input gets a 4xx with a JSON error that says what is wrong; nothing a caller or PIOPIY sends can
produce a 500. Everything received is stored before it is acted on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.bus import relay
from agent.config import Settings
from agent.dashboard.routes import install as install_dashboard
from agent.logs import for_call
from agent.metrics import CONTENT_TYPE
from agent.runtime import Runtime
from agent.security import CALL_ID_PATTERN, is_call_id, webhook_secret_ok
from agent.speech_models import SpeechModels
from agent.stream import stream_socket
from agent.telephony.piopiy import (
    Pcmo,
    PiopiyFormatError,
    bridge_action,
    hangup_action,
    record_action,
    redact_tokens,
    speak_action,
    stream_action,
    strict_json,
)
from agent.telephony.piopiy_webhooks import (
    AnswerRequest,
    CallEvent,
    CdrRecord,
    DtmfCallback,
    cdr_is_newer,
    parse_body,
)
from agent.unstreamed import CDR_BEFORE_STREAM, HANGUP_BEFORE_STREAM, close_unstreamed
from agent.yamlfile import ConfigError

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
_STATUSES = {s.value for s in HTTPStatus}


class HttpError(Exception):
    """An error answered as JSON `{"error": ..., "detail": ...}` with an HTTP status."""

    def __init__(self, status: int, error: str, detail: str = "") -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def create_app(
    settings: Settings, *, runtime: Runtime | None = None, models: SpeechModels | None = None
) -> FastAPI:
    """The ASGI app. Pass a started Runtime to share one between apps (tests); else it starts with the app,
    loading its speech models through `models` (default: the installed ones; see agent/speech_models.py)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = runtime is None
        app.state.runtime = runtime or await Runtime.start(settings, models)
        try:
            yield
        finally:
            if own:
                await app.state.runtime.stop()

    app = FastAPI(title="Hotline", version="0.1.0", lifespan=lifespan)

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes, wrong methods, unparsable bodies of typed routes: the same JSON shape as ours.
        error = HTTPStatus(exc.status_code).phrase.lower() if exc.status_code in _STATUSES else "error"
        body = {"error": error, "detail": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error", "detail": type(exc).__name__}, status_code=500)

    app.add_api_websocket_route("/stream", stream_socket)
    install_dashboard(app)

    @app.websocket("/api/live")
    async def live(ws: WebSocket) -> None:
        """Live events of every call, or of one (`?call=ID`), as JSON text frames."""
        rt: Runtime = ws.app.state.runtime
        presented = ws.headers.get("x-hotline-secret") or ws.query_params.get("secret")
        host = ws.client.host if ws.client else None
        await ws.accept()
        if rt.refusal(host, platform=False) is not None:
            await ws.close(1008, "too many failed attempts")
            return
        if not webhook_secret_ok(rt.webhook_secret, presented):
            rt.auth_failed(host, "live")
            await ws.close(1008, "unauthorized")
            return
        call = ws.query_params.get("call")
        if call is not None and not is_call_id(call):
            log.warning("live feed refused: %r is not a call id", call[:64])
            await ws.close(1008, "malformed call id")
            return
        await relay(rt.bus.subscribe(call), ws.send_json)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (agent/metrics.py); needs the secret unless `server.metrics_public`."""
        rt = _rt(request)
        if not rt.settings.service.server.metrics_public:
            _authorized(request)
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """Liveness: 200 whenever the event loop answers, draining or not (a drain must not be killed)."""
        return {"status": "alive"}

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Readiness: 200 while taking calls, 503 while draining (load balancers stop sending work)."""
        rt = _rt(request)
        body = {
            "status": "draining" if rt.draining else "ok",
            "active_calls": len(rt.sessions),
            "loop_lag_ms": rt.loop_lag.summary(),
            "model_queue_depth": rt.executor.queue_depth,
        }
        return JSONResponse(body, status_code=503 if rt.draining else 200)

    @app.post("/piopiy/answer", openapi_extra=_json_body_doc(AnswerRequest))
    async def answer(request: Request) -> JSONResponse:
        rt = _authorized(request)
        body = await _json_body(request, rt)
        call = _parse(AnswerRequest, body, "malformed answer_url body")
        return JSONResponse(await _answer_pcmo(rt, call, body))

    @app.post("/piopiy/events", openapi_extra=_json_body_doc(CallEvent))
    async def events(request: Request) -> dict[str, Any]:
        rt = _authorized(request)
        body = await _json_body(request, rt)
        event = _parse(CallEvent, body, "malformed event")
        session = rt.session_for_cmiuuid(event.cmiuuid)
        call_id = session.call_id if session else await rt.store.call_id_for(cmiuuid=event.cmiuuid)
        if call_id is None and event.request_id:
            # Outbound calls are known by request_id until PIOPIY tells us their cmiuuid.
            call_id = await rt.store.call_id_for(request_id=event.request_id)
            if call_id and event.cmiuuid:
                await rt.store.update_call(call_id, cmiuuid=event.cmiuuid)
        stored = await rt.store.add_platform_event(
            event.delivery_key(body),
            status=event.status,
            payload=body,
            at=time.time(),
            call_id=call_id,
            cmiuuid=event.cmiuuid,
        )
        if not stored:  # PIOPIY delivered it again: stored and acted on once
            log.info("event %s of %s delivered again: ignored", event.status[:64], event.cmiuuid)
            return {"ok": True, "call_id": call_id, "duplicate": True}
        session = rt.session_for_cmiuuid(event.cmiuuid)  # again: the call may have ended while we stored
        if session is not None:
            await session.on_platform_event(event)
        elif call_id and rt.cluster is not None and await rt.route(call_id, {"cmd": "event", "body": body}):
            pass  # the call lives on another worker: it got the event
        elif call_id and event.status_lower == "hangup":
            if not await close_unstreamed(rt.store, call_id, HANGUP_BEFORE_STREAM, rt.metrics.call_ended):
                # PIOPIY usually closes the socket before it posts `hangup`: say who ended the call. In
                # the call's lane of writes: its closing update may still be waiting there (a slow store).
                await rt.writer.write(call_id, lambda: rt.store.mark_caller_hangup(call_id), "caller hangup")
        return {"ok": True, "call_id": call_id, "duplicate": False}

    @app.post("/piopiy/cdr", openapi_extra=_json_body_doc(CdrRecord))
    async def cdr(request: Request) -> dict[str, Any]:
        rt = _authorized(request)
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

    @app.post("/piopiy/dtmf", openapi_extra=_json_body_doc(DtmfCallback))
    async def dtmf(request: Request) -> dict[str, Any]:
        rt = _authorized(request)
        body = await _json_body(request, rt)
        digits = _parse(DtmfCallback, body, "malformed DTMF callback")
        session = rt.session_for_cmiuuid(digits.call_uuid)
        call_id = session.call_id if session else await rt.store.call_id_for(cmiuuid=digits.call_uuid)
        await rt.store.add_event(
            source="piopiy",
            status="dtmf",
            payload=body,
            at=time.time(),
            call_id=call_id,
            cmiuuid=digits.call_uuid,
        )
        session = rt.session_for_cmiuuid(digits.call_uuid)
        if session is not None:
            await session.on_dtmf(digits.dtmf)
            return {"ok": True, "delivered": True}
        owner = await rt.route(call_id, {"cmd": "dtmf", "digits": digits.dtmf}) if call_id else None
        return {"ok": True, "delivered": owner is not None}

    @app.get("/api/calls")
    async def list_calls(
        request: Request,
        limit: int = Query(50, ge=1, le=500),
        offset: int = Query(0, ge=0, le=2**31),  # beyond a database's integer: a 422, not a 500
        bot: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        rt = _authorized(request)
        total, calls = await rt.store.list_calls(limit=limit, offset=offset, bot=bot, status=status)
        return {"total": total, "limit": limit, "offset": offset, "calls": calls}

    @app.get("/api/calls/{call_id}")
    async def get_call(request: Request, call_id: str) -> dict[str, Any]:
        rt = _authorized(request)
        _check_call_id(call_id)
        record = await rt.store.call_record(call_id)
        if record is None:
            raise HttpError(404, "no such call", call_id)
        record["live"] = call_id in rt.sessions
        return record

    @app.get("/api/calls/{call_id}/recording")
    async def get_recording(request: Request, call_id: str) -> FileResponse:
        rt = _authorized(request)
        _check_call_id(call_id)
        path = await rt.store.recording_path(call_id)
        if path is None or not path.is_file():
            raise HttpError(404, "no recording for this call", call_id)
        return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")

    @app.get("/api/live-calls")
    async def live_calls(request: Request) -> dict[str, Any]:
        """The calls live right now on every worker (with the cluster), oldest first."""
        rt = _authorized(request)
        return {"worker": rt.worker_id, "calls": await rt.live_calls()}

    @app.post("/api/calls/{call_id}/transfer")
    async def supervisor_transfer(request: Request, call_id: str, body: SupervisorTransfer) -> JSONResponse:
        """A supervisor's "transfer now": to a department of the call's bot (never a number)."""
        rt = _authorized(request)
        _check_call_id(call_id)
        record = await rt.store.call_record(call_id)
        bot = rt.settings.bots.get(record["bot"]) if record and record.get("bot") else None
        if bot is None:
            raise HttpError(404, "no such call", call_id)
        if body.department not in bot.departments:
            raise HttpError(422, "no such department", f"departments: {', '.join(sorted(bot.departments))}")
        command = {"cmd": "transfer", "department": body.department, "user": body.user}
        return _routed(call_id, await rt.route(call_id, command))

    @app.post("/api/calls/{call_id}/hangup")
    async def supervisor_hangup(request: Request, call_id: str, body: SupervisorAction) -> JSONResponse:
        """A supervisor's "hang up"."""
        rt = _authorized(request)
        _check_call_id(call_id)
        return _routed(call_id, await rt.route(call_id, {"cmd": "hangup", "user": body.user}))

    @app.post("/api/reload")
    async def reload(request: Request) -> dict[str, Any]:
        rt = _authorized(request)
        try:
            return await rt.reload()
        except ConfigError as exc:
            raise HttpError(
                422, "invalid config: nothing reloaded", "\n".join(map(str, exc.problems))
            ) from None

    return app


class SupervisorAction(BaseModel):
    """Who asks (for the record)."""

    user: str | None = Field(default=None, max_length=64)


class SupervisorTransfer(SupervisorAction):
    """Transfer to one of the call's bot departments."""

    department: str = Field(min_length=1, max_length=64)


def _json_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a webhook that reads its own body (leniently, a 400 when malformed): the body's model."""
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _routed(call_id: str, worker: str | None) -> JSONResponse:
    if worker is None:
        raise HttpError(409, "the call is not live", call_id)
    return JSONResponse({"ok": True, "call_id": call_id, "worker": worker}, status_code=202)


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _check_call_id(call_id: str) -> None:
    """A call id from a URL: one we could have minted, or a 400 (ids name files: nothing else passes)."""
    if not is_call_id(call_id):
        log.warning("refused a malformed call id %r", call_id[:64])
        raise HttpError(400, "malformed call id", f"a call id matches {CALL_ID_PATTERN}")


def _authorized(request: Request) -> Runtime:
    """Webhooks and the API need the shared secret: header X-Hotline-Secret, a Bearer token, or ?secret=."""
    rt = _rt(request)
    host = request.client.host if request.client else None
    refusal = rt.refusal(host, platform=request.url.path.startswith("/piopiy/"))
    if refusal == "too_many_failures":
        raise HttpError(429, "too many failed attempts", "wait a minute, then send the right secret")
    if refusal == "not_platform":
        log.warning("refused %s %s from %s: not a platform address", request.method, request.url.path, host)
        raise HttpError(403, "forbidden", "this address may not call PIOPIY webhooks (security.platform_ips)")
    presented = request.headers.get("x-hotline-secret") or request.query_params.get("secret")
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    if not webhook_secret_ok(rt.webhook_secret, presented):
        rt.auth_failed(host, "webhook")
        log.warning("refused %s %s from %s: missing or wrong secret", request.method, request.url.path, host)
        raise HttpError(401, "unauthorized", "send the webhook secret as X-Hotline-Secret or ?secret=")
    return rt


def _parse(model: type[M], body: Any, error: str) -> M:
    """A webhook body as its typed model, or a 400 naming every bad field."""
    try:
        return parse_body(model, body)
    except PiopiyFormatError as exc:
        raise HttpError(400, error, str(exc)) from None


async def _json_body(request: Request, rt: Runtime) -> Any:
    limit = rt.settings.service.security.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HttpError(413, "body too large", f"limit is {limit} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise HttpError(413, "body too large", f"limit is {limit} bytes")
    try:
        return strict_json(raw)
    except (ValueError, RecursionError) as exc:
        raise HttpError(400, "body is not valid JSON", str(exc)[:200]) from None


async def _answer_pcmo(rt: Runtime, call: AnswerRequest, body: Any) -> Pcmo:
    """The PCMO for a new call: stream it to the bot owning the number, or the fallback. A retried
    answer_url (the same cmiuuid) finds the call's row and gets the same answer (`_answer_again`)."""
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
        if not await rt.store.insert_call(
            id=call_id, status="unrouted", end_reason=why, ended_at=now, meta={"answer": body}, **common
        ):
            return await _answer_again(rt, call_id, body)
        log.warning("call %s to %s: %s, answered with the fallback PCMO", call.cmiuuid, call.to, why)
        await rt.store.add_action(call_id, "answer", pcmo, {"rule": why, "number": call.to}, now)
        rt.metrics.call_ended(bot_name or "unknown", "unrouted")
        return pcmo
    assert bot_name is not None
    pcmo, exp = _stream_pcmo(rt, call_id, bot_name, call.from_, call.to)
    if not await rt.store.insert_call(
        id=call_id,
        bot=bot_name,
        status="answered",
        sample_rate=bot.stream.voice_quality,
        meta={"answer": body, "stream_exp": exp},
        **common,
    ):
        return await _answer_again(rt, call_id, body)
    await rt.store.add_action(
        call_id, "answer", redact_tokens(pcmo), {"rule": "number_routing", "bot": bot_name}, now
    )
    log.info("call %s (%s → %s) routed to bot %s as %s", call.cmiuuid, call.from_, call.to, bot_name, call_id)
    return pcmo


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
    await rt.store.add_event(
        source="piopiy",
        status="answer_retry",
        payload=body,
        at=time.time(),
        call_id=call_id,
        cmiuuid=row["cmiuuid"],
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
