"""The dashboard's routes with odd cookies, forms, headers, methods, ids and queries: never a 5xx.

Logged in and not: no cookie, a real session (with junk appended), forged and non-ASCII cookies; forms
of any fields (over the 50-field limit too) and bytes that are not UTF-8; CSRF tokens and origins of
any text; call ids and queries PostgreSQL cannot store (NUL). Run on SQLite and on PostgreSQL, with
stand-in speech models (the dashboard never uses them).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.settings import load_settings
from agent.dashboard.auth import COOKIE
from agent.web.app import create_app
from testkit.servers import serve_in_thread
from testkit.standins import StandInModels
from tests.agent.conftest import set_secrets, write_config
from tests.agent.test_dashboard import PASSWORD, USERS
from tests.fuzz.conftest import PG_DSN, Surface, cases, postgres_available
from tests.fuzz.strategies import nasty_text

PAGES = ["", "/login", "/logout", "/live.json", "/calls", "/static/{name}"]
CALL_PAGES = ["/calls/{id}", "/calls/{id}/transfer", "/calls/{id}/hangup", "/calls/{id}/recording"]
METHODS = ["GET", "GET", "POST", "POST", "HEAD", "PUT", "DELETE", "OPTIONS"]
QUERY_KEYS = ["search", "bot", "status", "page", "next", "flash", "x"]
FORM_KEYS = ["user", "password", "next", "csrf", "department"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dashboard(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service with a dashboard user, on SQLite or on PostgreSQL (its own schema); its URL."""
    directory = tmp_path_factory.mktemp(f"fuzz-dashboard-{request.param}")
    overrides: dict[str, Any] = {
        "dashboard": {"users": USERS, "max_failed_logins": 10**9},
        "security": {"max_failed_auth": 10**9},
    }
    schema = f"hotline_fuzz_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        if not postgres_available():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
            pytest.skip("no PostgreSQL at 127.0.0.1:5432")
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        overrides["storage"] = {
            "url": f"{PG_DSN}?options=-csearch_path%3D{schema}",
            "data_dir": str(directory),
            "recordings_dir": str(directory / "recordings"),
        }
    set_secrets()
    try:
        settings = load_settings(write_config(directory, **overrides))
        with serve_in_thread(create_app(settings, models=StandInModels()), startup_timeout_s=120) as url:
            yield url
    finally:
        if request.param == "postgresql":
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def raw(text: str) -> bytes:
    """Any text as bytes: UTF-8, lone surrogates kept (as bytes that are not UTF-8)."""
    return text.encode("utf-8", "surrogatepass")


def header_text(text: str) -> bytes:
    """Any text as header bytes (non-ASCII arrives as latin-1 junk), without what HTTP forbids."""
    return re.sub(rb"[\x00-\x1f\x7f]", b"", raw(text)).strip(b" \t")


def encoded(text: str) -> str:
    """Any text percent-encoded for a URL or a form."""
    return quote(raw(text), safe="")


@st.composite
def requests(draw: st.DrawFn, session: str, csrf: str) -> dict[str, Any]:
    """One request: method, path, query, cookie, CSRF header, origin and body."""
    page = draw(st.sampled_from(PAGES + CALL_PAGES))
    call_id = draw(st.one_of(st.just("c_nosuchcall"), st.just("c_\x00"), nasty_text))
    name = draw(st.one_of(st.sampled_from(["dashboard.js", "dashboard.css"]), nasty_text))
    path = "/dashboard" + page.format(id=encoded(call_id), name=encoded(name))
    cookie = draw(
        st.one_of(
            st.none(),
            st.just(session),
            st.just(session),  # logged in more often than not: most routes are behind the session
            st.just(session),
            nasty_text.map(lambda junk: session + junk),
            st.just(f"sam|{int(time.time()) + 10 * 365 * 86400}|{'0' * 64}"),  # the old format, forged
            nasty_text,
        )
    )
    # The real CSRF token never goes to /logout: the session must outlive the cases that use it.
    token = draw(st.one_of(st.none(), nasty_text, st.just(csrf) if page != "/logout" else nasty_text))
    fields = draw(
        st.one_of(
            st.dictionaries(st.sampled_from(FORM_KEYS), nasty_text, max_size=5),
            st.dictionaries(nasty_text, nasty_text, min_size=45, max_size=60),  # around the 50-field limit
            st.just({"user": "sam", "password": PASSWORD, "next": "/dashboard"}),
        )
    )
    form = "&".join(f"{encoded(k)}={encoded(v)}" for k, v in fields.items()).encode()
    body = draw(st.one_of(st.just(form), st.binary(max_size=300)))
    headers: dict[str, bytes] = {}
    if cookie is not None:
        headers["cookie"] = header_text(f"{COOKIE}={cookie}")
    if token is not None:
        if draw(st.booleans()):
            headers["x-csrf-token"] = header_text(token)
        else:
            body = body + b"&csrf=" + encoded(token).encode()
    if draw(st.booleans()):
        headers["origin"] = header_text(draw(nasty_text))
    headers["content-type"] = draw(
        st.sampled_from([b"application/x-www-form-urlencoded", b"multipart/form-data", b"text/plain", b""])
    )
    query = "&".join(
        f"{k}={encoded(v)}"
        for k, v in draw(
            st.dictionaries(st.sampled_from(QUERY_KEYS), st.one_of(st.just("\x00"), nasty_text), max_size=3)
        ).items()
    )
    method = draw(st.sampled_from(METHODS))
    return {
        "method": method,
        "url": f"{path}?{query}" if query else path,
        "headers": headers,
        "content": body,
    }


@pytest.mark.surface("dashboard")
def test_dashboard_routes_never_answer_a_server_error(dashboard: str, surface: Surface) -> None:
    with httpx.Client(base_url=dashboard, timeout=30) as http:
        login = http.post(
            "/dashboard/login", data={"user": "sam", "password": PASSWORD, "next": "/dashboard"}
        )
        assert login.status_code == 303
        session = str(http.cookies[COOKIE])
        page = http.get("/dashboard").text
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        assert csrf is not None
        http.cookies.clear()

        @cases(ci=300)
        @given(request=requests(session, csrf.group(1)))
        def one(request: dict[str, Any]) -> None:
            surface()
            response = http.request(**request)
            http.cookies.clear()  # each case sends only the cookie it chose
            assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"

        one()
        assert http.get("/dashboard/live.json", headers={"cookie": f"{COOKIE}={session}"}).status_code == 200
