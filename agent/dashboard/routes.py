"""The dashboard's routes under /dashboard: login, live calls, call views with controls, call history.

Pages need a session cookie (agent.dashboard.auth); every POST but the login needs the session's CSRF
token. Without users in `dashboard.users` every route answers 404 with how to add one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from agent.dashboard import pages
from agent.dashboard.auth import COOKIE, LoginLimiter, hash_password, verify_password
from agent.dashboard.html import page
from agent.dashboard.sockets import add_socket_routes
from agent.records.timeline import timeline_png
from agent.security import is_call_id
from agent.web.request_body import BodyTooLarge, BodyTooSlow, read_body
from agent.worker.commands import Supervise
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)
T = TypeVar("T")
STATIC = Path(__file__).parent / "static"
MAX_FORM_FIELDS = 50


@functools.cache
def _unknown_user_hash() -> str:
    """A hash checked for unknown user names, so they cost the same time as known ones."""
    return hash_password("no such user")


STATIC_TYPES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
PER_PAGE = 25
FLASH = {
    "transferred": "Transfer requested: the bot says the handoff line, then bridges.",
    "hung_up": "Hang-up requested.",
    "not_live": "The call is not live: nothing done.",
    "bad_department": "No such department for this call's bot.",
}
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


class Refusal(Exception):
    """Stop handling a dashboard request and answer `response` (a login redirect, 401, 403, 404…)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class Session:
    """A logged-in request: who, their session id and its CSRF token."""

    rt: Runtime
    user: str
    session_id: str
    csrf: str


def install(app: FastAPI) -> None:
    """Mount the dashboard on the app."""

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return exc.response

    app.add_exception_handler(Refusal, refused)
    app.include_router(dashboard_router())


def dashboard_router() -> APIRouter:
    """The /dashboard routes (one failed-login limiter per router, i.e. per app)."""
    router = APIRouter(prefix="/dashboard", include_in_schema=False)
    limiters: dict[tuple[int, int], LoginLimiter] = {}

    def limiter(rt: Runtime) -> LoginLimiter:
        cfg = rt.settings.service.dashboard
        key = (cfg.max_failed_logins, cfg.failed_login_window_s)
        return limiters.setdefault(key, LoginLimiter(*key))

    @router.get("/login")
    async def login_form(request: Request, next: str = "/dashboard") -> HTMLResponse:
        _configured(_rt(request))
        return _html(pages.login_page(next_url=_safe_next(next)))

    @router.post("/login")
    async def login(request: Request) -> Response:
        rt = _configured(_rt(request))
        client = request.client.host if request.client else "unknown"
        if limiter(rt).blocked(client):
            return _html(pages.login_page(error="Too many failed logins: wait a few minutes."), 429)
        form = await _form(request)
        user, password = form.get("user", ""), form.get("password", "")
        cfg = rt.settings.service.dashboard
        # An unknown user costs the same hashing as a known one: timing does not tell which names exist.
        hashed = cfg.users.get(user)
        checked = await asyncio.to_thread(verify_password, password, hashed or _unknown_user_hash())
        if hashed is None or not checked:
            limiter(rt).failed(client)
            error = "Wrong user or password."
            return _html(pages.login_page(next_url=_safe_next(form.get("next", "")), error=error), 401)
        response = RedirectResponse(_safe_next(form.get("next", "")), status_code=303)
        cookie = await _stored(rt.dashboard_sessions.open(user, cfg.session_ttl_s))
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=cfg.session_ttl_s,
            path="/dashboard",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or rt.settings.service.server.public_url.startswith("https"),
        )
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        s, _ = await _posted(request)
        await _stored(s.rt.dashboard_sessions.close(s.session_id))  # refused from now on, on every worker
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    @router.get("")
    async def live_calls(request: Request) -> HTMLResponse:
        s = await _session(request, page=True)
        return _html(pages.live_page(await s.rt.calls.listing(), user=s.user, csrf=s.csrf))

    @router.get("/live.json")
    async def live_json(request: Request) -> JSONResponse:
        s = await _session(request)
        now = time.time()
        calls = [pages.live_row(c, now) for c in await s.rt.calls.listing()]
        return JSONResponse({"calls": calls}, headers=HEADERS)

    @router.get("/calls")
    async def past_calls(
        request: Request,
        search: str = Query("", max_length=200),
        bot: str = Query("", max_length=64),
        status: str = Query("", max_length=64),
        page: int = Query(1, ge=1, le=100_000),
    ) -> HTMLResponse:
        s = await _session(request, page=True)
        total, calls = await s.rt.store.list_calls(
            limit=PER_PAGE,
            offset=(page - 1) * PER_PAGE,
            bot=bot or None,
            status=status or None,
            search=search.strip() or None,
        )
        query = {"search": search, "bot": bot, "status": status}
        html = pages.calls_page(
            calls, total=total, query=query, page_no=page, per_page=PER_PAGE, user=s.user, csrf=s.csrf
        )
        return _html(html)

    @router.get("/calls/{call_id}")
    async def call_view(request: Request, call_id: str, flash: str = "") -> HTMLResponse:
        s = await _session(request, page=True)
        record = await _record(s.rt, call_id)
        live = any(c["call_id"] == call_id for c in await s.rt.calls.listing())
        bot = s.rt.settings.bots.get(str(record.get("bot")))
        departments = sorted(bot.departments) if bot is not None else []
        html = pages.call_page(
            record, live=live, departments=departments, user=s.user, csrf=s.csrf, flash=FLASH.get(flash, "")
        )
        return _html(html)

    @router.post("/calls/{call_id}/transfer")
    async def transfer(request: Request, call_id: str) -> Response:
        s, form = await _posted(request)
        record = await _record(s.rt, call_id)
        bot = s.rt.settings.bots.get(str(record.get("bot")))
        department = form.get("department", "")
        if bot is None or department not in bot.departments:
            return _back(call_id, "bad_department")
        command = Supervise("transfer", s.user, department)
        return _back(call_id, "transferred" if await s.rt.calls.route(call_id, command) else "not_live")

    @router.post("/calls/{call_id}/hangup")
    async def hangup(request: Request, call_id: str) -> Response:
        s, _ = await _posted(request)
        await _record(s.rt, call_id)
        routed = await s.rt.calls.route(call_id, Supervise("hangup", s.user))
        return _back(call_id, "hung_up" if routed else "not_live")

    @router.get("/calls/{call_id}/recording")
    async def recording(request: Request, call_id: str) -> FileResponse:
        s = await _session(request)
        _check_call_id(call_id)
        path = await s.rt.store.recording_path(call_id)
        if path is None or not path.is_file():
            raise Refusal(JSONResponse({"error": "no recording for this call"}, status_code=404))
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @router.get("/calls/{call_id}/timeline.png")
    async def timeline(request: Request, call_id: str) -> Response:
        s = await _session(request)
        record = await _record(s.rt, call_id)
        wav = await s.rt.store.recording_path(call_id)
        png = await asyncio.to_thread(_draw_timeline, record, wav if wav and wav.is_file() else None)
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        if name not in STATIC_TYPES:
            raise Refusal(JSONResponse({"error": "not found"}, status_code=404))
        return FileResponse(STATIC / name, media_type=STATIC_TYPES[name])

    add_socket_routes(router)
    return router


def _rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _configured(rt: Runtime) -> Runtime:
    if not rt.settings.service.dashboard.users:
        raise Refusal(_html(pages.no_users_page(), 404))
    return rt


async def _session(request: Request, *, page: bool = False) -> Session:
    """The logged-in session, or a Refusal: pages go to the login form, the rest get 401."""
    rt = _configured(_rt(request))
    cfg = rt.settings.service.dashboard
    signed_in = await _stored(rt.dashboard_sessions.signed_in(request.cookies.get(COOKIE), cfg.session_ttl_s))
    if signed_in is None or signed_in.user not in cfg.users:
        if COOKIE in request.cookies:
            log.info("dashboard %s %s: session cookie refused", request.method, request.url.path)
        if page:
            target = "/dashboard/login?next=" + quote(str(request.url.path), safe="/")
            raise Refusal(RedirectResponse(target, status_code=303))
        raise Refusal(JSONResponse({"error": "log in to the dashboard"}, status_code=401))
    csrf = rt.dashboard_sessions.signer.csrf_token(signed_in.session_id)
    return Session(rt, signed_in.user, signed_in.session_id, csrf)


async def _posted(request: Request) -> tuple[Session, dict[str, str]]:
    """A dashboard POST: the session and its form, after checking the CSRF token (403 without)."""
    s = await _session(request)
    form = await _form(request)
    token = form.get("csrf") or request.headers.get("x-csrf-token")
    if not s.rt.dashboard_sessions.signer.csrf_ok(s.session_id, token):
        log.warning(
            "dashboard %s %s by %s: missing or wrong CSRF token", request.method, request.url.path, s.user
        )
        raise Refusal(JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403))
    return s, form


async def _stored(work: Awaitable[T]) -> T:
    """A session read or write in the store; a 503 page when the store cannot be reached."""
    try:
        return await work
    except (SQLAlchemyError, OSError) as exc:
        log.warning("dashboard: the store is unreachable (%s)", type(exc).__name__)
        page_html = page("Try again shortly", "<p>The dashboard cannot reach its store right now.</p>")
        raise Refusal(_html(page_html, 503)) from None


async def _form(request: Request, limit: int = 16384, max_fields: int = MAX_FORM_FIELDS) -> dict[str, str]:
    """An urlencoded form body (first value of each field); 413 past `limit` bytes, 408 when too slow,
    400 past `max_fields` fields."""
    timeout_s = _rt(request).settings.service.server.body_timeout_s
    close = {"Connection": "close"}  # the rest of the body may still be coming: we stop reading it
    try:
        raw = await read_body(request, max_bytes=limit, timeout_s=timeout_s)
    except BodyTooLarge:
        raise Refusal(JSONResponse({"error": "form too large"}, status_code=413, headers=close)) from None
    except BodyTooSlow as exc:
        body = {"error": "form too slow", "detail": str(exc)}
        raise Refusal(JSONResponse(body, status_code=408, headers=close)) from None
    try:
        fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # parse_qs refuses more than max_num_fields
        log.warning(
            "dashboard %s %s: a form with over %d fields", request.method, request.url.path, max_fields
        )
        raise Refusal(
            JSONResponse({"error": f"more than {max_fields} form fields"}, status_code=400)
        ) from None
    return {k: v[0] for k, v in fields.items()}


def _check_call_id(call_id: str) -> None:
    """A call id from a URL is one we could have minted, or the request ends with a 400."""
    if not is_call_id(call_id):
        log.warning("dashboard: refused a malformed call id %r", call_id[:64])
        raise Refusal(_html(page("Not a call id", "<p>This is not a call id.</p>"), 400))


async def _record(rt: Runtime, call_id: str) -> dict[str, Any]:
    _check_call_id(call_id)
    record = await rt.store.call_record(call_id)
    if record is None:
        raise Refusal(_html(page("No such call", "<p>No call has this id.</p>"), 404))
    return record


def _draw_timeline(record: dict[str, Any], recording: Path | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="hotline-timeline-") as tmp:
        return timeline_png(record, recording, Path(tmp) / "timeline.png").read_bytes()


def _back(call_id: str, flash: str) -> RedirectResponse:
    return RedirectResponse(f"/dashboard/calls/{quote(call_id, safe='')}?flash={flash}", status_code=303)


def _safe_next(target: str) -> str:
    """Only our own pages after login (never another site)."""
    ok = target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target
    return target if ok else "/dashboard"


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)
