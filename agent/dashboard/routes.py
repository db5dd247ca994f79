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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from agent.dashboard import pages
from agent.dashboard.auth import COOKIE, LoginLimiter, SessionSigner, hash_password, verify_password
from agent.dashboard.html import page
from agent.dashboard.sockets import add_socket_routes
from agent.runtime import Runtime
from agent.security import is_call_id
from agent.testing.report import timeline_png

STATIC = Path(__file__).parent / "static"
log = logging.getLogger(__name__)


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
    """A logged-in request: who, their cookie and its CSRF token."""

    rt: Runtime
    user: str
    cookie: str
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
        cookie = _signer(rt).issue(user, cfg.session_ttl_s)
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
        await _posted(request)
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response

    @router.get("")
    async def live_calls(request: Request) -> HTMLResponse:
        s = _session(request, page=True)
        return _html(pages.live_page(await s.rt.live_calls(), user=s.user, csrf=s.csrf))

    @router.get("/live.json")
    async def live_json(request: Request) -> JSONResponse:
        s = _session(request)
        now = time.time()
        calls = [pages.live_row(c, now) for c in await s.rt.live_calls()]
        return JSONResponse({"calls": calls}, headers=HEADERS)

    @router.get("/calls")
    async def past_calls(
        request: Request,
        search: str = Query("", max_length=200),
        bot: str = Query("", max_length=64),
        status: str = Query("", max_length=64),
        page: int = Query(1, ge=1, le=100_000),
    ) -> HTMLResponse:
        s = _session(request, page=True)
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
        s = _session(request, page=True)
        record = await _record(s.rt, call_id)
        live = any(c["call_id"] == call_id for c in await s.rt.live_calls())
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
        command = {"cmd": "transfer", "department": department, "user": s.user}
        return _back(call_id, "transferred" if await s.rt.route(call_id, command) else "not_live")

    @router.post("/calls/{call_id}/hangup")
    async def hangup(request: Request, call_id: str) -> Response:
        s, _ = await _posted(request)
        await _record(s.rt, call_id)
        routed = await s.rt.route(call_id, {"cmd": "hangup", "user": s.user})
        return _back(call_id, "hung_up" if routed else "not_live")

    @router.get("/calls/{call_id}/recording")
    async def recording(request: Request, call_id: str) -> FileResponse:
        s = _session(request)
        _check_call_id(call_id)
        path = await s.rt.store.recording_path(call_id)
        if path is None or not path.is_file():
            raise Refusal(JSONResponse({"error": "no recording for this call"}, status_code=404))
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    @router.get("/calls/{call_id}/timeline.png")
    async def timeline(request: Request, call_id: str) -> Response:
        s = _session(request)
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


def _signer(rt: Runtime) -> SessionSigner:
    return SessionSigner.from_secret(rt.webhook_secret)


def _configured(rt: Runtime) -> Runtime:
    if not rt.settings.service.dashboard.users:
        raise Refusal(_html(pages.no_users_page(), 404))
    return rt


def _session(request: Request, *, page: bool = False) -> Session:
    """The logged-in session, or a Refusal: pages go to the login form, the rest get 401."""
    rt = _configured(_rt(request))
    signer = _signer(rt)
    cookie = request.cookies.get(COOKIE)
    user = signer.user_of(cookie)
    if cookie is None or user is None or user not in rt.settings.service.dashboard.users:
        if page:
            target = "/dashboard/login?next=" + quote(str(request.url.path), safe="/")
            raise Refusal(RedirectResponse(target, status_code=303))
        raise Refusal(JSONResponse({"error": "log in to the dashboard"}, status_code=401))
    return Session(rt, user, cookie, signer.csrf_token(cookie))


async def _posted(request: Request) -> tuple[Session, dict[str, str]]:
    """A dashboard POST: the session and its form, after checking the CSRF token (403 without)."""
    s = _session(request)
    form = await _form(request)
    token = form.get("csrf") or request.headers.get("x-csrf-token")
    if not _signer(s.rt).csrf_ok(s.cookie, token):
        raise Refusal(JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403))
    return s, form


async def _form(request: Request, limit: int = 16384) -> dict[str, str]:
    """An urlencoded form body (first value of each field); 413 past `limit` bytes."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise Refusal(JSONResponse({"error": "form too large"}, status_code=413))
    fields = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
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
