"""Call ids name files (recordings, exports), so every boundary that takes one from outside refuses any
id we could not have minted (`c_` and 32 hex digits): the stream socket (even with a validly signed
token), the API, the dashboard, `hotline calls`, retention and recovery. A crafted id (`../x`, an
absolute path, NUL, a very long one) touches no file outside the data directories."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.cli.main import main
from agent.dashboard.auth import COOKIE
from agent.records.retention import purge_recordings
from agent.records.store import Store
from agent.security import StreamTokens, is_call_id, is_call_id_prefix
from agent.worker.recovery import Incarnation, recover_abandoned_calls
from agent.worker.runtime import new_call_id
from tests.agent.conftest import SUPPORT_NUMBER, Service, running_service, write_config
from tests.agent.test_calls import call_id_of, sim
from tests.agent.test_dashboard import USERS, csrf_of, login

STREAM_SECRET = b"test-stream-secret-0123456789abcdef"  # what running_service sets
CRAFTED = [
    "../victim",
    "/absolute/victim",
    "c_\x00",
    "c_" + "a" * 5000,
    "c_../../victim",
    "C_" + "A" * 32,
    "",
]
"""Ids that are not ours; each test adds a victim directory where the path would lead."""
ONE_SEGMENT = ["%2E%2E", "c_%00", "c_" + "a" * 3000, "c_0123", "c_" + "g" * 32, "c_" + "A" * 32]
"""Crafted ids that fit one URL path segment (percent-encoded as they would be sent)."""


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("ids"), dashboard={"users": USERS}) as service:
        yield service


def victim(directory: Path) -> Path:
    """A directory with a file that a crafted id would reach; it must survive."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "keep.txt").write_text("precious")
    (directory / "caller.raw").write_bytes(b"\x01\x00" * 800)  # looks like a call's raw recording
    old = time.time() - 3600
    os.utime(directory / "caller.raw", (old, old))
    return directory


def intact(directory: Path) -> bool:
    return (directory / "keep.txt").read_text() == "precious" and (directory / "caller.raw").exists()


def test_the_pattern_takes_what_we_mint_and_nothing_else() -> None:
    tokens = StreamTokens(STREAM_SECRET, 600)
    assert is_call_id(new_call_id()) and is_call_id(tokens.call_id_for("any cmiuuid / ../ \x00"))
    assert not any(is_call_id(crafted) for crafted in CRAFTED)
    assert is_call_id_prefix("c_a1b2c3") and not is_call_id_prefix("c_a1/..") and not is_call_id_prefix("x")


async def test_answer_url_mints_well_formed_ids(svc: Service) -> None:
    pcmo = await sim(svc).answer(to_number=SUPPORT_NUMBER, cmiuuid="../../etc/passwd\\x")
    assert is_call_id(call_id_of(pcmo))


@pytest.mark.parametrize(
    "crafted", CRAFTED, ids=["dotdot", "absolute", "nul", "long", "prefixed", "upper", "empty"]
)
async def test_a_signed_stream_for_a_crafted_id_is_refused_and_touches_no_file(
    svc: Service, crafted: str, tmp_path: Path
) -> None:
    """With the stream secret (a leaked one, say), a token for `../victim` used to open a call whose
    recording folder was the victim, deleted when the call closed."""
    recordings = svc.settings.path(svc.settings.service.storage.recordings_dir)
    target = victim(tmp_path / "absolute-victim")
    call_id = crafted.replace("/absolute/victim", str(target))
    if "victim" in crafted and not crafted.startswith("/"):
        target = victim((recordings / call_id).resolve())
    caller, called = "919876543210", SUPPORT_NUMBER
    exp, token = StreamTokens(STREAM_SECRET, 600).issue(call_id, "support_desk", caller, called)
    query = {"call": call_id, "bot": "support_desk", "from": caller, "to": called, "exp": exp, "token": token}
    ws_url = svc.url.replace("http", "ws", 1) + "/stream?" + urlencode(query)
    async with connect(ws_url, max_size=None) as ws:
        with contextlib.suppress(ConnectionClosed):  # refused at once, or (before the fix) recorded
            await ws.send(b"\x00\x00" * 1600)
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 1008
    await asyncio.sleep(0.3)  # a call, had it opened, would be closing and saving now
    assert intact(target)
    assert not target.with_name(target.name + ".wav").exists()


@pytest.mark.parametrize("crafted", ONE_SEGMENT)
async def test_the_api_refuses_crafted_ids_with_400(svc: Service, crafted: str) -> None:
    async with httpx.AsyncClient(base_url=svc.url, headers=svc.headers, timeout=30) as http:
        for method, path, body in [
            ("GET", "/api/calls/{}", None),
            ("GET", "/api/calls/{}/recording", None),
            ("POST", "/api/calls/{}/transfer", {"department": "billing"}),
            ("POST", "/api/calls/{}/hangup", {}),
        ]:
            answer = await http.request(method, path.format(crafted), json=body)
            assert answer.status_code == 400, (method, path, answer.text[:200])
            # A NUL is refused before any route reads the URL (web/url_guard.py); the rest by the id check.
            expected = "bad request" if "%00" in crafted else "malformed call id"
            assert answer.json()["error"] == expected
    live = svc.url.replace("http", "ws", 1) + f"/api/live?call={quote('../x')}"
    async with connect(live, additional_headers=svc.api_headers) as ws:
        await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 1008 and ws.close_reason == "malformed call id"


@pytest.fixture
async def dashboard(svc: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=svc.url, timeout=30) as http:
        assert (await login(http)).status_code == 303
        yield http


@pytest.mark.parametrize("crafted", ONE_SEGMENT)
async def test_the_dashboard_refuses_crafted_ids(
    svc: Service, dashboard: httpx.AsyncClient, crafted: str
) -> None:
    csrf = csrf_of((await dashboard.get("/dashboard/calls")).text)
    for method, path in [
        ("GET", "/dashboard/calls/{}"),
        ("GET", "/dashboard/calls/{}/recording"),
        ("GET", "/dashboard/calls/{}/timeline.png"),
        ("POST", "/dashboard/calls/{}/transfer"),
        ("POST", "/dashboard/calls/{}/hangup"),
    ]:
        form = {"csrf": csrf, "department": "billing"} if method == "POST" else None
        answer = await dashboard.request(method, path.format(crafted), data=form)
        assert answer.status_code == 400, (method, path, answer.status_code)
    cookie = {"Cookie": f"{COOKIE}={dashboard.cookies[COOKIE]}"}
    for socket in ("live", "listen"):
        url = svc.url.replace("http", "ws", 1) + f"/dashboard/{socket}/{crafted}"
        async with connect(url, additional_headers=cookie) as ws:
            await asyncio.wait_for(ws.wait_closed(), 10)
        # A NUL is refused before any route reads the URL (agent/web/url_guard.py); the rest by the id check.
        reason = "a NUL character in the URL" if "%00" in crafted else "malformed call id"
        assert ws.close_code == 1008 and ws.close_reason == reason


def test_hotline_calls_refuses_crafted_ids_and_never_exports_outside_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A row whose id climbs out of --out (written by anything but us) is never exported."""
    url = f"sqlite:///{tmp_path / 'hotline.db'}"
    config = write_config(tmp_path, storage={"url": url, "data_dir": str(tmp_path / "var")})
    escape = "c_aaaaaa/../../../escape"

    async def populate() -> None:
        store = Store(url)
        await store.init()
        await store.create_call(
            id=escape, status="completed", started_at=time.time() - 60, ended_at=time.time()
        )
        await store.close()

    asyncio.run(populate())
    out = tmp_path / "exports" / "here"
    exports = [["export", given, "--out", str(out)] for given in ("../../escape", "c_aaaaaa", escape)]
    for args in [["show", "../x"], ["show", "c_\x00"], *exports]:
        assert main(["--config", str(config), "calls", *args]) == 1, args
    err = capsys.readouterr().err
    assert "'../x' is not a call id" in err and "no call 'c_aaaaaa'" in err
    assert not (tmp_path / "escape").exists() and not out.exists()


async def test_retention_and_recovery_leave_crafted_ids_files_alone(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    outside = victim(tmp_path / "victim")
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    await store.init()
    try:
        long_ago = time.time() - 90 * 86400
        # Retention: a row that names a file under the recordings, with an id that is not ours.
        kept = recordings / "kept.wav"
        kept.write_bytes(b"RIFF")
        await store.create_call(id="../kept", status="completed", started_at=long_ago, ended_at=long_ago + 5,
                                recording_path=str(kept))  # fmt: skip
        result = await purge_recordings(store, 30, root=recordings)
        assert result.deleted == 0 and kept.exists()
        # Recovery: an active row of a dead worker whose id leads to the victim's "raw parts".
        dead = {"worker": "w", "host": Incarnation("w").host, "pid": 2**22 + 17, "boot": "gone"}
        await store.create_call(
            id="../victim", status="active", started_at=long_ago, meta={"served_by": dead}
        )
        done = await recover_abandoned_calls(store, recordings, Incarnation("w"), None, alone=True)
        assert done.finished == [] and done.waiting == []
        assert intact(outside) and not (recordings / "victim.wav").exists()
    finally:
        await store.close()
