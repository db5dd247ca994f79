"""The HTTP surface: PIOPIY's answer_url, events, CDRs, DTMF callbacks, the stream socket, the call API.

Bad input gets a 4xx with a JSON error that says what is wrong; nothing a caller or PIOPIY sends can
produce a 500. Everything received is stored before it is acted on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, TypeVar

from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent.api_keys import presented_key
from agent.bus import relay
from agent.client_address import ClientAddressMiddleware, TrustedProxies
from agent.config import Settings
from agent.dashboard.routes import install as install_dashboard
from agent.health import health
from agent.logs import for_call
from agent.metrics import CONTENT_TYPE
from agent.record_writer import store_unreachable
from agent.request_body import BodyTooLarge, BodyTooSlow, read_body
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
from agent.url_guard import NulGuard
from agent.yamlfile import ConfigError

log = logging.getLogger(__name__)

STORE_WAIT_S = 1.0
"""How long answer_url waits for the store to take a new call's row before answering from memory."""
M = TypeVar("M", bound=BaseModel)
_STATUSES = {s.value for s in HTTPStatus}


class HttpError(Exception):
    """An error answered as JSON `{"error": ..., "detail": ...}` with an HTTP status."""

    def __init__(self, status: int, error: str, detail: str = "", *, close: bool = False) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.close = close
        """Close the connection after answering (a body we stopped reading is still on its way)."""


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
    app.add_middleware(NulGuard)  # a 400 before any route: no store holds a NUL (agent/url_guard.py)
    # Client addresses as our balancers saw them, never as clients claim (agent/client_address.py).
    app.add_middleware(
        ClientAddressMiddleware, proxies=TrustedProxies(settings.service.server.trusted_proxies)
    )

    @app.exception_handler(HttpError)
    async def _http_error(request: Request, exc: HttpError) -> JSONResponse:
        headers = {"Connection": "close"} if exc.close else None
        return JSONResponse(
            {"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=headers
        )

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
        host = ws.client.host if ws.client else None
        await ws.accept()
        if rt.refusal(host, platform=False) is not None:
            await ws.close(1008, "too many failed attempts")
            return
        try:
            name = await rt.api_keys.name_of(presented_key(ws.headers))
        except (SQLAlchemyError, OSError) as exc:
            log.warning(
                "live socket from %s: API key not checked, the store is unreachable (%s)",
                host,
                type(exc).__name__,
            )
            await ws.close(1011, "the store is unreachable")
            return
        if name is None:
            rt.auth_failed(host, "live")
            log.warning("refused the live socket from %s: missing, wrong or revoked API key", host)
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
        """Prometheus metrics (agent/metrics.py); needs an API key unless `server.metrics_public`."""
        rt = _rt(request)
        if not rt.settings.service.server.metrics_public:
            await _api_client(request)
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/livez")
    async def livez() -> dict[str, str]:
        """Liveness: 200 whenever the event loop answers, draining or not (a drain must not be killed)."""
        return {"status": "alive"}

    @app.get("/healthz")
    async def healthz(request: Request) -> JSONResponse:
        """Readiness: 200 while taking calls (`ok`, or `degraded` with the reasons: agent/health.py), 503
        while draining (load balancers stop sending work)."""
        body, status = health(_rt(request))  # degraded storage keeps the worker in rotation
        return JSONResponse(body, status_code=status)

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
        call_id = _known_call(rt, digits.call_uuid) or await rt.store.call_id_for(cmiuuid=digits.call_uuid)
        await _store_event(rt, call_id, digits.call_uuid, "dtmf", body)
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
        rt = await _api_client(request)
        total, calls = await rt.store.list_calls(limit=limit, offset=offset, bot=bot, status=status)
        return {"total": total, "limit": limit, "offset": offset, "calls": calls}

    @app.get("/api/calls/{call_id}")
    async def get_call(request: Request, call_id: str) -> Response:
        rt = await _api_client(request)
        _check_call_id(call_id)
        record = await rt.store.call_record(call_id)
        if record is None:
            raise HttpError(404, "no such call", call_id)
        record["live"] = call_id in rt.sessions
        # Serialized on a thread: a long call's record must not hold up every other call's audio.
        return Response(await asyncio.to_thread(_json_bytes, record), media_type="application/json")

    @app.get("/api/calls/{call_id}/recording")
    async def get_recording(request: Request, call_id: str) -> FileResponse:
        rt = await _api_client(request)
        _check_call_id(call_id)
        path = await rt.store.recording_path(call_id)
        if path is None or not path.is_file():
            raise HttpError(404, "no recording for this call", call_id)
        return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")

    @app.get("/api/live-calls")
    async def live_calls(request: Request) -> dict[str, Any]:
        """The calls live right now on every worker (with the cluster), oldest first."""
        rt = await _api_client(request)
        return {"worker": rt.worker_id, "calls": await rt.live_calls()}

    # Typed bodies are checked before the handler runs: the key is checked before them, as a dependency.
    @app.post("/api/calls/{call_id}/transfer", dependencies=[Depends(_api_client)])
    async def supervisor_transfer(request: Request, call_id: str, body: SupervisorTransfer) -> JSONResponse:
        """A supervisor's "transfer now": to a department of the call's bot (never a number)."""
        rt = _rt(request)
        _check_call_id(call_id)
        record = await rt.store.call_record(call_id)
        bot = rt.settings.bots.get(record["bot"]) if record and record.get("bot") else None
        if bot is None:
            raise HttpError(404, "no such call", call_id)
        if body.department not in bot.departments:
            raise HttpError(422, "no such department", f"departments: {', '.join(sorted(bot.departments))}")
        command = {"cmd": "transfer", "department": body.department, "user": body.user}
        return _routed(call_id, await rt.route(call_id, command))

    @app.post("/api/calls/{call_id}/hangup", dependencies=[Depends(_api_client)])
    async def supervisor_hangup(request: Request, call_id: str, body: SupervisorAction) -> JSONResponse:
        """A supervisor's "hang up"."""
        rt = _rt(request)
        _check_call_id(call_id)
        return _routed(call_id, await rt.route(call_id, {"cmd": "hangup", "user": body.user}))

    @app.post("/api/reload")
    async def reload(request: Request) -> dict[str, Any]:
        rt = await _api_client(request)
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


def _admitted(request: Request) -> tuple[Runtime, str | None]:
    """The runtime and the client's address, unless the address is refused before any credential is
    read: too many failures lately (429), or a PIOPIY webhook from outside security.platform_ips (403)."""
    rt = _rt(request)
    host = request.client.host if request.client else None
    refusal = rt.refusal(host, platform=request.url.path.startswith("/piopiy/"))
    if refusal == "too_many_failures":
        raise HttpError(429, "too many failed attempts", "wait a minute, then send the right credentials")
    if refusal == "not_platform":
        log.warning("refused %s %s from %s: not a platform address", request.method, request.url.path, host)
        raise HttpError(403, "forbidden", "this address may not call PIOPIY webhooks (security.platform_ips)")
    return rt, host


async def _api_client(request: Request) -> Runtime:
    """/api/* and /metrics need an API key (`Authorization: Bearer KEY` or `X-Hotline-Api-Key: KEY`):
    one of security.api_keys_env, or an active one of `hotline apikey`. The webhook secret is no key."""
    rt, host = _admitted(request)
    where = f"{request.method} {request.url.path}"
    try:
        name = await rt.api_keys.name_of(presented_key(request.headers))
    except (SQLAlchemyError, OSError) as exc:
        log.warning("%s: API key not checked, the store is unreachable (%s)", where, type(exc).__name__)
        raise HttpError(503, "the store is unreachable", "API keys from the environment still work") from None
    if name is None:
        rt.auth_failed(host, "api")
        log.warning("refused %s from %s: missing, wrong or revoked API key", where, host)
        if _carries_webhook_secret(request, rt):  # an old client: say what changed
            detail = "the webhook secret opens /piopiy/* only: send an API key (hotline apikey add NAME)"
        else:
            detail = (
                "send an API key as Authorization: Bearer KEY or X-Hotline-Api-Key (hotline apikey add NAME)"
            )
        raise HttpError(401, "unauthorized", detail)
    return rt


def _webhook_secret_of(request: Request) -> str | None:
    """What a request presents as the webhook secret: X-Hotline-Secret, ?secret=, or a Bearer token."""
    presented = request.headers.get("x-hotline-secret") or request.query_params.get("secret")
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    return presented


def _carries_webhook_secret(request: Request, rt: Runtime) -> bool:
    return webhook_secret_ok(rt.webhook_secret, _webhook_secret_of(request))


def _authorized(request: Request) -> Runtime:
    """PIOPIY's webhooks (/piopiy/*) need the webhook secret, and nothing else opens them."""
    rt, host = _admitted(request)
    if not _carries_webhook_secret(request, rt):
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

    known = call_id is not None and (call_id in rt.sessions or rt.recent.cmiuuid(call_id) is not None)
    if not known or not rt.writer.waiting_calls:
        try:
            return await add()
        except Exception as exc:
            if not (known and store_unreachable(exc)):
                raise
    assert call_id is not None
    await rt.writer.write(call_id, add, f"piopiy {event.status}")
    return True


async def _answer_pcmo(rt: Runtime, call: AnswerRequest, body: Any) -> Pcmo:
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


def _json_bytes(value: Any) -> bytes:
    """JSON as FastAPI's JSONResponse writes it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _known_call(rt: Runtime, cmiuuid: str | None) -> str | None:
    """Our id of a call live or answered here lately, known without the store."""
    session = rt.session_for_cmiuuid(cmiuuid)
    return session.call_id if session is not None else rt.recent.call_id(cmiuuid)


async def _store_event(rt: Runtime, call_id: str | None, cmiuuid: str | None, status: str, body: Any) -> None:
    """Store a platform callback. A call known here gets it in its lane of record writes (kept while the
    store is away, in order with the call's own writes); others need the store now (else a 500, and
    PIOPIY retries)."""
    at = time.time()

    async def add() -> None:
        await rt.store.add_event(
            source="piopiy", status=status, payload=body, at=at, call_id=call_id, cmiuuid=cmiuuid
        )

    if call_id is not None and (call_id in rt.sessions or rt.recent.cmiuuid(call_id) is not None):
        await rt.writer.write(call_id, add, f"piopiy {status}")
    else:
        await add()


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
