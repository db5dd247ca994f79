"""Bad input to the dashboard gets a 4xx and a log line, never a 500 with a traceback: each case here
was a 500 before (tests/fuzz/test_fuzz_dashboard.py found the NUL ones on PostgreSQL). On SQLite and
PostgreSQL, with stand-in speech models (the dashboard never uses them)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from websockets.asyncio.client import connect

from agent.config.settings import load_settings
from agent.dashboard.auth import COOKIE
from agent.web.app import create_app
from testkit.servers import serve_in_thread
from testkit.standins import StandInModels
from tests.agent.conftest import API_HEADERS, set_secrets, write_config
from tests.agent.records.test_store import PG_DSN, _postgres_available
from tests.agent.test_dashboard import PASSWORD, USERS, csrf_of


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def dash(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp(f"dash-input-{request.param}")
    storage = None
    schema = f"hotline_test_{uuid.uuid4().hex[:12]}"
    if request.param == "postgresql":
        if not _postgres_available():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
            pytest.skip("no PostgreSQL at 127.0.0.1:5432")
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        storage = {"url": f"{PG_DSN}?options=-csearch_path%3D{schema}", "data_dir": str(directory)}
    set_secrets()
    overrides = {"storage": storage} if storage else {}
    settings = load_settings(write_config(directory, dashboard={"users": USERS}, **overrides))
    try:
        with serve_in_thread(create_app(settings, models=StandInModels()), startup_timeout_s=120) as url:
            yield url
    finally:
        if storage:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def http(dash: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=dash, timeout=30) as client:
        yield client


def session_of(http: httpx.Client) -> tuple[dict[str, str], str]:
    """Log in; the cookie header and the CSRF token of the session."""
    http.post("/dashboard/login", data={"user": "sam", "password": PASSWORD, "next": "/dashboard"})
    cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
    http.cookies.clear()
    return cookie, csrf_of(http.get("/dashboard", headers=cookie).text)


@pytest.mark.parametrize(
    "cookie",
    [
        b"sam|1|\xc3\xa9",  # the old cookie format with non-ASCII: compare_digest raised TypeError
        b"\xe9\xff",
        "sam|{expiry}|{mac}\xe9",
        b"x" * 4000,
    ],
)
def test_an_odd_cookie_is_a_refusal(
    http: httpx.Client, cookie: bytes | str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    if isinstance(cookie, str):
        cookie = cookie.format(expiry=int(time.time()) + 999, mac="0" * 64).encode("utf-8")
    headers = {"Cookie": COOKIE.encode() + b"=" + cookie}
    assert http.get("/dashboard/live.json", headers=headers).status_code == 401
    page = http.get("/dashboard/calls", headers=headers)
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    assert http.post("/dashboard/logout", headers=headers, data={"csrf": "x"}).status_code == 401
    assert "session cookie refused" in caplog.text


@pytest.mark.parametrize("token", ["é" * 64, "\u00ff", "x" * 2000])
def test_an_odd_csrf_token_is_a_403(http: httpx.Client, token: str, caplog: pytest.LogCaptureFixture) -> None:
    cookie, _ = session_of(http)
    url = "/dashboard/calls/c_nosuchcall/hangup"
    assert http.post("/dashboard/logout", headers=cookie, data={"csrf": token}).status_code == 403
    assert http.post(url, headers={**cookie, "x-csrf-token": token.encode("utf-8")}).status_code == 403
    assert "missing or wrong CSRF token" in caplog.text


def test_a_form_with_more_than_50_fields_is_a_400(
    http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    fields = "&".join(f"f{i}=1" for i in range(51)) + f"&user=sam&password={PASSWORD}"
    answer = http.post(
        "/dashboard/login", content=fields, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 400 and answer.json() == {"error": "more than 50 form fields"}
    assert "a form with over 50 fields" in caplog.text
    cookie, token = session_of(http)
    many = "&".join(f"f{i}=1" for i in range(60)) + f"&csrf={token}"
    assert http.post("/dashboard/logout", headers=cookie, content=many).status_code == 400
    assert http.get("/dashboard/live.json", headers=cookie).status_code == 200  # not logged out


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/calls/c_%00",
        "/dashboard/calls/c_%00/recording",
        "/dashboard/calls/c_%00/timeline.png",
        "/dashboard/calls?search=%00",
        "/dashboard/calls?bot=a%00",
        "/dashboard/calls?status=%00",
        "/api/calls/c_%00",
        "/api/calls?bot=%00",
    ],
)
def test_a_nul_in_the_url_is_a_400(http: httpx.Client, path: str, caplog: pytest.LogCaptureFixture) -> None:
    cookie, _ = session_of(http)
    answer = http.get(path, headers={**cookie, **API_HEADERS})
    assert answer.status_code == 400 and "NUL" in answer.json()["detail"]
    assert "a NUL character in the URL" in caplog.text
    assert http.get("/dashboard/calls?search=x", headers=cookie).status_code == 200


async def test_a_nul_in_a_socket_url_closes_it_with_1008(dash: str) -> None:
    for path in ("/dashboard/live/c_%00", "/api/live?call=%00", "/stream?call=%00&token=x"):
        async with connect(dash.replace("http", "ws", 1) + path, additional_headers=API_HEADERS) as ws:
            await ws.wait_closed()
        assert (ws.close_code, ws.close_reason) == (1008, "a NUL character in the URL"), path
