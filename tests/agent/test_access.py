"""Who opens what: the webhook secret opens PIOPIY's webhooks only, named API keys open the API only,
and dashboard sessions are kept server-side: signed with their own key, expiring and revoked on every
worker sharing the store. Two workers run here on one SQLite store, with stand-in speech models."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import ExitStack, redirect_stdout
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from agent.cli.main import main as hotline
from agent.config.settings import load_settings
from agent.dashboard.auth import COOKIE, DashboardSessions, SessionSigner
from agent.records.access_store import AccessStore, NameTaken
from agent.records.store import Store
from agent.web.api_keys import ApiKeys, key_hash, parse_env_keys, presented_key
from agent.web.app import create_app
from testkit.servers import serve_in_thread
from testkit.standins import StandInModels
from tests.agent.conftest import API_HEADERS, WEBHOOK_SECRET, Service, set_secrets, write_config
from tests.agent.records.test_store import store  # noqa: F401 (the fixture: SQLite and PostgreSQL)
from tests.agent.test_dashboard import PASSWORD, USERS, csrf_of

TEN_YEARS_S = 10 * 365 * 86400


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    """Two workers sharing one SQLite store (and the secrets, as a deployment shares them)."""
    shared = tmp_path_factory.mktemp("shared")
    set_secrets()
    services = []
    with ExitStack() as stack:
        for name in ("a", "b"):
            directory = tmp_path_factory.mktemp(f"worker-{name}")
            storage = {
                "url": f"sqlite:///{shared / 'hotline.db'}",
                "data_dir": str(directory),
                "recordings_dir": str(shared / "recordings"),
            }
            many = {"max_failed_auth": 100_000}  # these tests knock with wrong credentials on purpose
            config = write_config(directory, storage=storage, dashboard={"users": USERS}, security=many)
            settings = load_settings(config)
            app = create_app(settings, models=StandInModels())
            url = stack.enter_context(serve_in_thread(app, startup_timeout_s=120))
            settings.service.server.public_url = url
            services.append(Service(url=url, settings=settings, data_dir=directory, app=app))
        yield services[0], services[1]


def cli(service: Service, *args: str) -> tuple[int, str]:
    """`hotline --config <the worker's config> ARGS…`: exit status and what it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        status = hotline(["--config", str(service.settings.config_path), *args])
    return status, out.getvalue()


def login(http: httpx.Client) -> str:
    """Log sam in; the session cookie's value."""
    answer = http.post("/dashboard/login", data={"user": "sam", "password": PASSWORD, "next": "/dashboard"})
    assert answer.status_code == 303, answer.text
    return str(http.cookies[COOKIE])


def with_cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


# ------------------------------------------------------------------ the webhook secret and API keys


def test_the_webhook_secret_opens_no_route_but_piopiys(workers: tuple[Service, Service]) -> None:
    worker, _ = workers
    assert worker.app is not None
    # Every HTTP route the app serves, from its OpenAPI spec (routers are included lazily, so the app's
    # own route list does not show them); /api/live, the socket, is below.
    paths = worker.app.openapi()["paths"]
    api = [
        (m.upper(), p) for p, ops in paths.items() if p.startswith("/api/") or p == "/metrics" for m in ops
    ]
    assert len(api) >= 8  # every /api route there is, and /metrics: none may take the webhook secret
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for method, template in api:
            path = template.replace("{call_id}", "c_nope")
            for secret in (
                {"X-Hotline-Secret": WEBHOOK_SECRET},
                {"Authorization": f"Bearer {WEBHOOK_SECRET}"},
            ):
                answer = http.request(method, path, headers=secret, json={"department": "billing"})
                assert answer.status_code == 401, (method, path, answer.text)
                assert "opens /piopiy/* only" in answer.json()["detail"]
            answer = http.request(method, path, params={"secret": WEBHOOK_SECRET}, json={})
            assert answer.status_code == 401, (method, path)
        assert http.get("/api/calls", headers=API_HEADERS).status_code == 200

    async def live(headers: dict[str, str]) -> tuple[int | None, str | None]:
        async with connect(
            worker.url.replace("http", "ws", 1) + "/api/live", additional_headers=headers
        ) as ws:
            await ws.wait_closed()
        return ws.close_code, ws.close_reason

    assert asyncio.run(live({"X-Hotline-Secret": WEBHOOK_SECRET})) == (1008, "unauthorized")


@pytest.mark.parametrize("path", ["/piopiy/answer", "/piopiy/events", "/piopiy/cdr", "/piopiy/dtmf"])
def test_an_api_key_opens_no_webhook(workers: tuple[Service, Service], path: str) -> None:
    worker, _ = workers
    body = {"from": "919876543210", "to": "918040001000", "cmiuuid": "access-1", "status": "ringing"}
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for headers in (API_HEADERS, {"X-Hotline-Secret": API_HEADERS["Authorization"][7:]}):
            answer = http.post(path, json=body, headers=headers)
            assert answer.status_code == 401 and answer.json()["error"] == "unauthorized"
        assert http.post(path, json=body, headers=worker.webhook_headers).status_code != 401


def test_keys_made_with_the_cli_open_the_api_on_every_worker_until_revoked(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    status, key = cli(a, "apikey", "add", "grafana")
    key = key.strip()
    assert status == 0 and key.startswith("hk_") and len(key) > 40
    assert cli(a, "apikey", "add", "grafana")[0] == 1  # one active key per name
    listed = cli(b, "apikey", "list")[1]
    assert re.search(r"grafana\s+\S+ \S+\s+active", listed) and key not in listed
    assert re.search(r"tests\s+-\s+active \(from HOTLINE_API_KEYS\)", listed)
    with httpx.Client(timeout=30) as http:
        for worker in workers:
            assert (
                http.get(f"{worker.url}/api/calls", headers={"Authorization": f"Bearer {key}"}).status_code
                == 200
            )
            assert http.get(f"{worker.url}/metrics", headers={"X-Hotline-Api-Key": key}).status_code == 200
        assert cli(b, "apikey", "revoke", "grafana") == (
            0,
            "revoked grafana: every worker refuses it from now on\n",
        )
        for worker in workers:
            refused = http.get(f"{worker.url}/api/calls", headers={"Authorization": f"Bearer {key}"})
            assert refused.status_code == 401
        assert http.get(f"{a.url}/api/calls", headers=API_HEADERS).status_code == 200  # the others still work
    assert cli(a, "apikey", "revoke", "grafana")[0] == 1  # already revoked
    assert cli(a, "apikey", "revoke", "tests")[0] == 1  # set in the environment: not the store's to revoke
    assert re.search(r"grafana\s+\S+ \S+\s+revoked", cli(a, "apikey", "list")[1])
    status, again = cli(a, "apikey", "add", "grafana")  # a revoked name may be given a new key
    assert status == 0 and again.strip() != key


def test_keys_in_the_environment_are_checked_at_start(
    workers: tuple[Service, Service], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOTLINE_API_KEYS", "ops:short")
    for command in ("check", "serve"):  # refused before any model loads
        assert hotline(["--config", str(workers[0].settings.config_path), command]) == 1
        assert "HOTLINE_API_KEYS, entry 1 (ops): the key must be at least 24" in capsys.readouterr().err
    monkeypatch.undo()
    monkeypatch.setenv("HOTLINE_SESSION_SECRET", "short")
    assert hotline(["--config", str(workers[0].settings.config_path), "check"]) == 1
    assert "HOTLINE_SESSION_SECRET must be at least 16 characters" in capsys.readouterr().err
    with pytest.raises(ValueError, match="at least 16"):
        SessionSigner.from_secret("short")
    monkeypatch.undo()

    assert parse_env_keys(" ops:" + "k" * 24 + " , grafana:" + "g" * 30, "HOTLINE_API_KEYS") == {
        "ops": key_hash("k" * 24),
        "grafana": key_hash("g" * 30),
    }
    assert parse_env_keys("", "HOTLINE_API_KEYS") == {}
    for bad, says in (
        ("ops", "write name:key"),
        ("o ps:" + "k" * 24, "write name:key"),
        ("ops:short", "at least 24"),
        ("ops:" + "k" * 24 + ",ops:" + "j" * 24, "named twice"),
    ):
        with pytest.raises(ValueError, match=says) as error:
            parse_env_keys(bad, "HOTLINE_API_KEYS")
        assert "k" * 24 not in str(error.value) and "short" not in str(error.value)  # never the key
    assert presented_key({"x-hotline-api-key": "a"}) == "a"
    assert presented_key({"authorization": "Bearer  b "}) == "b"
    assert presented_key({"x-hotline-secret": "c"}) is None


async def test_api_keys_in_the_store(store: Store) -> None:  # noqa: F811
    access = AccessStore(store)
    await access.init()
    keys = ApiKeys({"env": key_hash("e" * 30)}, access)
    await access.add_api_key("ops", key_hash("o" * 30), 1000.0)
    with pytest.raises(NameTaken):
        await access.add_api_key("ops", key_hash("x" * 30), 1001.0)
    assert await keys.name_of("o" * 30) == "ops" and await keys.name_of("e" * 30) == "env"
    assert await keys.name_of("p" * 30) is None and await keys.name_of(None) is None
    assert await access.revoke_api_key("ops", 1002.0) and not await access.revoke_api_key("ops", 1003.0)
    assert await keys.name_of("o" * 30) is None
    assert await access.api_keys() == [{"name": "ops", "created_at": 1000.0, "revoked_at": 1002.0}]
    await access.add_api_key("ops", key_hash("n" * 30), 1004.0)
    assert await keys.name_of("n" * 30) == "ops" and await keys.name_of("o" * 30) is None


# ------------------------------------------------------------------ dashboard sessions


def test_a_forged_ten_year_cookie_signed_with_the_webhook_secret_is_refused(
    workers: tuple[Service, Service],
) -> None:
    worker, _ = workers
    expiry = int(time.time()) + TEN_YEARS_S
    old_key = hmac.new(WEBHOOK_SECRET.encode(), b"hotline dashboard session", hashlib.sha256).digest()
    body = f"sam|{expiry}"
    old_style = f"{body}|{hmac.new(old_key, f'session|{body}'.encode(), hashlib.sha256).hexdigest()}"
    webhook_signed = SessionSigner.from_secret(WEBHOOK_SECRET).cookie("A" * 43)
    session_signed_unknown = SessionSigner.from_secret(worker_session_secret()).cookie("B" * 43)
    with httpx.Client(base_url=worker.url, timeout=30) as http:
        for forged in (old_style, webhook_signed, session_signed_unknown):
            assert http.get("/dashboard/live.json", headers=with_cookie(forged)).status_code == 401
            page = http.get("/dashboard/calls", headers=with_cookie(forged))
            assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")


def worker_session_secret() -> str:
    return os.environ["HOTLINE_SESSION_SECRET"]


def test_a_session_works_on_every_worker_and_logout_revokes_it_everywhere(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    with httpx.Client(base_url=a.url, timeout=30) as on_a, httpx.Client(base_url=b.url, timeout=30) as on_b:
        cookie = login(on_a)
        assert on_b.get("/dashboard/live.json", headers=with_cookie(cookie)).status_code == 200
        token = csrf_of(on_b.get("/dashboard", headers=with_cookie(cookie)).text)
        out = on_b.post("/dashboard/logout", data={"csrf": token}, headers=with_cookie(cookie))
        assert out.status_code == 303
        for http in (on_a, on_b):  # the very same cookie, sent again: refused by both workers
            assert http.get("/dashboard/live.json", headers=with_cookie(cookie)).status_code == 401
            again = http.post("/dashboard/logout", data={"csrf": token}, headers=with_cookie(cookie))
            assert again.status_code == 401


def test_a_session_expires_server_side_whatever_the_cookie_says(workers: tuple[Service, Service]) -> None:
    a, b = workers
    with httpx.Client(base_url=a.url, timeout=30) as http:
        cookie = login(http)
        assert http.get("/dashboard/live.json", headers=with_cookie(cookie)).status_code == 200
        # Its day has passed, as the store sees it; the cookie (signed, kept by a browser) is unchanged.
        db = Path(a.settings.service.storage.url.split(":///", 1)[1])
        id_hash = hashlib.sha256(cookie.partition(".")[0].encode()).hexdigest()
        passed = a.settings.service.dashboard.session_ttl_s + 1
        with sqlite3.connect(db) as conn:
            moved = conn.execute(
                "UPDATE dashboard_sessions SET created_at = created_at - ?, expires_at = expires_at - ? "
                "WHERE id_hash = ?",
                (passed, passed, id_hash),
            )
            assert moved.rowcount == 1
        for worker in (a, b):
            refused = httpx.get(f"{worker.url}/dashboard/live.json", headers=with_cookie(cookie), timeout=30)
            assert refused.status_code == 401


async def test_sessions_are_signed_with_their_own_key_and_held_by_the_store(store: Store) -> None:  # noqa: F811
    access = AccessStore(store)
    await access.init()
    sessions = DashboardSessions(SessionSigner.from_secret("the session secret"), access)
    cookie = await sessions.open("sam", 600, now=1000)
    signed_in = await sessions.signed_in(cookie, 600, now=1599)
    assert signed_in is not None and signed_in.user == "sam"
    assert await sessions.signed_in(cookie, 600, now=1601) is None  # expired
    assert await sessions.signed_in(cookie, 300, now=1400) is None  # session_ttl_s lowered since the login
    other = DashboardSessions(SessionSigner.from_secret("another secret, the webhook's"), access)
    assert await other.signed_in(cookie, 600, now=1001) is None  # another key: not our cookie
    session_id, _, mac = cookie.partition(".")
    assert await sessions.signed_in(f"{session_id}.{'0' * 64}", 600, now=1001) is None
    signer = sessions.signer
    assert signer.csrf_ok(session_id, signer.csrf_token(session_id))
    assert not signer.csrf_ok(session_id, None) and not signer.csrf_ok(session_id, "é" * 64)
    for junk in ("", "é.é", f"{session_id}.{mac}é", "x" * 5000, f"{session_id}.{mac}.x", "\x00"):
        assert signer.session_id(junk) is None
    await sessions.close(session_id)
    assert await sessions.signed_in(cookie, 600, now=1001) is None  # logged out
    b64 = base64.urlsafe_b64encode(b"\xff" * 32).rstrip(b"=").decode()
    assert len(b64) == 43 and signer.session_id(signer.cookie(b64)) == b64
