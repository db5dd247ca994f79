"""The supervisors' dashboard: login, sessions, CSRF, escaped pages, controls and events of a live call."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.cli.main import main as hotline
from agent.dashboard.auth import COOKIE, LoginLimiter, hash_password, verify_password
from agent.records.store import Store
from agent.worker.listen import BOT, CALLER, END, unpack
from testkit.caller_voice import caller_says
from testkit.line_audio import bot_audio_pcm
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record

PASSWORD = "correct horse battery"
USERS = {"sam": hash_password(PASSWORD, iterations=1000)}
SCRIPT_CALL = "c_5c21b7000000000000000000000000ff"


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("dash"), dashboard={"users": USERS}) as service:
        asyncio.run(_store_hostile_call(service))
        yield service


async def _store_hostile_call(service: Service) -> None:
    """An ended call whose caller 'said' markup, written straight to the service's database."""
    store = Store(service.settings.service.storage.url, base_dir=service.settings.base_dir)
    now = time.time()
    await store.create_call(
        id=SCRIPT_CALL, bot="support_desk", status="completed", from_number="919800000001",
        to_number=SUPPORT_NUMBER, started_at=now - 10, ended_at=now - 2,
    )  # fmt: skip
    await store.add_turn(SCRIPT_CALL, idx=0, role="bot", text="Hello, how can I help?", started_at=now - 9)
    await store.add_turn(
        SCRIPT_CALL, idx=1, role="caller", text="<script>alert(1)</script> my card", started_at=now - 6,
        ended_at=now - 4, latency={"response_ms": 850}, signals={"sentiment": -0.5},
    )  # fmt: skip
    await store.close()


@pytest.fixture
async def http(dash: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=dash.url, timeout=30) as client:
        yield client


async def login(http: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    return await http.post(
        "/dashboard/login", data={"user": "sam", "password": password, "next": "/dashboard"}
    )


def is_bridge(control: Any) -> bool:
    return any(a.get("action") == "bridge" for a in getattr(control, "actions", None) or [])


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


async def test_without_users_the_dashboard_is_404_and_says_how_to_add_one(service: Service) -> None:
    async with httpx.AsyncClient(base_url=service.url) as http:
        answer = await http.get("/dashboard")
        assert answer.status_code == 404 and "hotline passwd" in answer.text
        assert (await http.post("/dashboard/login", data={"user": "sam", "password": "x"})).status_code == 404


async def test_pages_need_a_login_and_a_wrong_password_is_refused(http: httpx.AsyncClient) -> None:
    answer = await http.get("/dashboard/calls")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/dashboard/login")
    assert (await http.get("/dashboard/live.json")).status_code == 401
    wrong = await login(http, "not the password")
    assert wrong.status_code == 401 and "Wrong user or password" in wrong.text and COOKIE not in wrong.cookies
    forged = f"{COOKIE}=sam|{int(time.time()) + 999}|{'0' * 64}"
    assert (await http.get("/dashboard/live.json", headers={"Cookie": forged})).status_code == 401


async def test_a_login_sets_a_strict_http_only_session_and_pages_show_escaped_calls(
    http: httpx.AsyncClient,
) -> None:
    answer = await login(http)
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    live = await http.get("/dashboard")
    assert live.status_code == 200 and 'id="live-calls"' in live.text and "sam" in live.text
    assert (await http.get("/dashboard/live.json")).json() == {"calls": []}
    found = await http.get("/dashboard/calls", params={"search": "card"})
    assert found.status_code == 200 and SCRIPT_CALL in found.text and "1 call(s)" in found.text
    assert "0 call(s)" in (await http.get("/dashboard/calls", params={"search": "zebra"})).text
    view = await http.get(f"/dashboard/calls/{SCRIPT_CALL}")
    assert view.status_code == 200
    assert "<script>alert" not in view.text and "&lt;script&gt;alert(1)&lt;/script&gt; my card" in view.text
    assert "<polyline" in view.text and "850" in view.text  # sentiment sparkline, latency table
    assert f"/dashboard/calls/{SCRIPT_CALL}/timeline.png" in view.text
    png = await http.get(f"/dashboard/calls/{SCRIPT_CALL}/timeline.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert (await http.get("/dashboard/calls/c_" + "0" * 32)).status_code == 404
    assert (await http.get("/dashboard/calls/c_nosuchcall")).status_code == 400  # not even a call id


async def test_posts_need_the_csrf_token_and_an_ended_call_is_not_live(http: httpx.AsyncClient) -> None:
    await login(http)
    token = csrf_of((await http.get(f"/dashboard/calls/{SCRIPT_CALL}")).text)
    url = f"/dashboard/calls/{SCRIPT_CALL}/transfer"
    assert (await http.post(url, data={"department": "billing"})).status_code == 403
    assert (await http.post(url, data={"department": "billing", "csrf": "0" * 64})).status_code == 403
    answer = await http.post(url, data={"department": "billing", "csrf": token})
    assert answer.status_code == 303 and answer.headers["location"].endswith("flash=not_live")
    flashed = await http.get(answer.headers["location"])
    assert "The call is not live" in flashed.text
    bad = await http.post(url, data={"department": "nowhere", "csrf": token})
    assert bad.headers["location"].endswith("flash=bad_department")


async def test_a_supervisor_transfers_a_live_call_and_watches_its_events(
    dash: Service, http: httpx.AsyncClient
) -> None:
    await login(http)
    session = http.cookies[COOKIE]
    ws_base = dash.url.replace("http", "ws", 1)
    sim = PiopiySimulator(dash.url, webhook_secret=WEBHOOK_SECRET)
    seen: list[dict[str, Any]] = []
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        async with connect(f"{ws_base}/dashboard/live/{call_id}") as refused:
            with pytest.raises(ConnectionClosed):
                await refused.recv()
            assert refused.close_code == 1008
        async with connect(
            f"{ws_base}/dashboard/live/{call_id}", additional_headers={"Cookie": f"{COOKIE}={session}"}
        ) as viewer:

            async def watch() -> None:
                async for message in viewer:
                    seen.append(json.loads(message))

            watcher = asyncio.create_task(watch())
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            listed = (await http.get("/dashboard/live.json")).json()["calls"]
            assert [c["call_id"] for c in listed] == [call_id] and listed[0]["bot"] == "support_desk"
            view = await http.get(f"/dashboard/calls/{call_id}")
            assert "Transfer to billing" in view.text and "Hang up" in view.text
            answer = await http.post(
                f"/dashboard/calls/{call_id}/transfer",
                data={"department": "billing", "csrf": csrf_of(view.text)},
            )
            assert answer.status_code == 303 and answer.headers["location"].endswith("flash=transferred")
            await call.wait_for_control(lambda c: getattr(c, "actions", None) is not None, timeout=20)
            await asyncio.sleep(0.3)
            watcher.cancel()
    supervisor = [e for e in seen if e["kind"] == "supervisor"]
    assert supervisor and supervisor[0]["data"]["user"] == "sam" and {e["call_id"] for e in seen} == {call_id}
    record = await final_record(dash, call_id)
    (action,) = [a for a in record["actions"] if a["type"] == "supervisor"]
    assert action["payload"] == {"action": "transfer", "department": "billing"}
    assert action["reason"] == {"by": "supervisor", "user": "sam"}


async def test_the_live_list_follows_calls_as_they_start_change_state_and_end(
    dash: Service, http: httpx.AsyncClient
) -> None:
    await login(http)
    cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
    url = dash.url.replace("http", "ws", 1) + "/dashboard/live"
    async with connect(url) as refused:
        with pytest.raises(ConnectionClosed):
            await refused.recv()
        assert refused.close_code == 1008
    snapshots: list[dict[str, Any]] = []

    async def next_where(ws: Any, check: Any) -> dict[str, Any]:
        while True:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 15))
            snapshots.append(snapshot)
            if check(snapshot["calls"]):
                return snapshot

    async with connect(url, additional_headers=cookie) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert first["calls"] == [] and abs(first["now"] - time.time()) < 5
        sim = PiopiySimulator(dash.url, webhook_secret=WEBHOOK_SECRET)
        async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
            call_id = call_id_of(call.pcmo)
            listed = await next_where(ws, lambda calls: [c["call_id"] for c in calls] == [call_id])
            row = listed["calls"][0]
            assert (row["number"], row["caller"], row["bot"]) == (
                SUPPORT_NUMBER,
                "919876543210",
                "support_desk",
            )
            assert row["started_at"] > 0
            # The greeting ends: the state goes to listening, pushed without polling.
            await next_where(ws, lambda calls: calls and calls[0]["state"] == "listening")
            await call.hangup()
            await next_where(ws, lambda calls: calls == [])
    states = [s["calls"][0]["state"] for s in snapshots if s["calls"]]
    assert states[0] in ("connecting", "greeting", "speaking") and states[-1] == "listening"


async def test_a_supervisor_listens_in_to_both_sides_of_a_live_call(
    dash: Service, http: httpx.AsyncClient
) -> None:
    await login(http)
    cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
    ws_base = dash.url.replace("http", "ws", 1)
    sim = PiopiySimulator(dash.url, webhook_secret=WEBHOOK_SECRET)
    words = caller_says("What are your opening hours?")
    heard: dict[int, bytearray] = {CALLER: bytearray(), BOT: bytearray()}
    ended = asyncio.Event()
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        async with connect(f"{ws_base}/dashboard/listen/{call_id}") as refused:
            with pytest.raises(ConnectionClosed):
                await refused.recv()
            assert refused.close_code == 1008
        async with connect(f"{ws_base}/dashboard/listen/{call_id}", additional_headers=cookie) as ear:

            async def hear() -> None:
                async for message in ear:
                    assert isinstance(message, bytes)
                    channel, rate, pcm = unpack(message)
                    assert rate == 8000
                    if channel == END:
                        ended.set()
                    else:
                        heard[channel].extend(pcm)

            listening = asyncio.create_task(hear())
            await call.say_pcm(words, 8000)
            await call.wait_for_bot_audio(timeout=15, since=call.now())
            await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
            await call.hangup()
            # The listener ends with the stream (END, then the close); a busy machine may take a while
            # to save the call first. Waiting on the task itself shows an assertion that failed in it.
            await asyncio.wait({listening}, timeout=30)
            assert listening.done(), "the listen-in stream did not end within 30 s of the hang-up"
            listening.result()
            assert ended.is_set()
        assert ear.close_code == 1000
    # What the supervisor heard is exactly what went over the line, both ways, from the moment they joined.
    caller, bot = bytes(heard[CALLER]), bytes(heard[BOT])
    assert len(caller) >= len(words) and caller in call.caller_audio()
    sent = b"".join(bot_audio_pcm(frame, 8000) for _, frame in call.received_audio)
    assert len(bot) >= 2 * 8000 and bot in sent  # at least the second reply, a second or more of it
    record = await final_record(dash, call_id)
    listens = [e for e in record["events"] if (e["source"], e["status"]) == ("supervisor", "listen")]
    assert [e["payload"] for e in listens] == [{"user": "sam"}]


async def test_a_supervisor_transfer_wins_over_the_answer_still_being_worked_out(dash: Service) -> None:
    sim = PiopiySimulator(dash.url, webhook_secret=WEBHOOK_SECRET)
    async with (
        await sim.place_call(to_number=SUPPORT_NUMBER) as call,
        httpx.AsyncClient(base_url=dash.url, headers=dash.headers, timeout=10) as api,
    ):
        call_id = call_id_of(call.pcmo)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        # The caller has just stopped: their turn is still being endpointed and read when the order comes.
        answer = await api.post(
            f"/api/calls/{call_id}/transfer", json={"department": "billing", "user": "sam"}
        )
        assert answer.status_code == 202
        bridge = await call.wait_for_control(is_bridge, timeout=15)
        assert bridge.actions[0]["action"] == "bridge"
    record = await final_record(dash, call_id)
    said = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert not any("branches are open" in line for line in said), said  # the answer was dropped…
    assert any(
        "opening hours" in t["text"].lower() for t in record["turns"] if t["role"] == "caller"
    )  # …the words kept


async def test_listening_to_a_call_that_is_not_live_closes_at_once(
    dash: Service, http: httpx.AsyncClient
) -> None:
    await login(http)
    cookie = {"Cookie": f"{COOKIE}={http.cookies[COOKIE]}"}
    url = dash.url.replace("http", "ws", 1) + f"/dashboard/listen/{SCRIPT_CALL}"
    async with connect(url, additional_headers=cookie) as ear:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ear.recv(), 5)
    assert (ear.close_code, ear.close_reason) == (1000, "the call is not live")


async def test_the_recording_needs_a_session(dash: Service, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=dash.url, headers=dash.headers) as api:
        calls = (await api.get("/api/calls", params={"bot": "support_desk"})).json()["calls"]
    recorded = next(c["call_id"] for c in calls if c.get("recording"))
    assert (await http.get(f"/dashboard/calls/{recorded}/recording")).status_code == 401
    await login(http)
    wav = await http.get(f"/dashboard/calls/{recorded}/recording")
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
    assert (
        f'src="/dashboard/calls/{recorded}/recording"'
        in (await http.get(f"/dashboard/calls/{recorded}")).text
    )


async def test_logout_ends_the_session(http: httpx.AsyncClient) -> None:
    await login(http)
    token = csrf_of((await http.get("/dashboard")).text)
    assert (await http.post("/dashboard/logout")).status_code == 403
    assert (await http.post("/dashboard/logout", data={"csrf": token})).status_code == 303
    assert (await http.get("/dashboard/live.json")).status_code == 401


async def test_six_failed_logins_from_one_address_get_429(tmp_path: Path) -> None:
    with running_service(tmp_path, dashboard={"users": USERS}) as service:
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
            codes = [(await login(http, f"guess {i}")).status_code for i in range(6)]
            assert codes == [401] * 5 + [429]
            assert (await login(http)).status_code == 429  # even the right password, until they age out


def test_failed_logins_are_limited_per_address() -> None:
    # Sessions themselves (signing key, expiry, logout on every worker): tests/agent/test_access.py.
    limiter = LoginLimiter(limit=2, window_s=10)
    limiter.failed("a", now=0)
    limiter.failed("a", now=1)
    assert (
        limiter.blocked("a", now=5) and not limiter.blocked("b", now=5) and not limiter.blocked("a", now=11)
    )


def test_hotline_passwd_prints_a_hash_the_dashboard_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("s3cret password\n"))
    assert hotline(["passwd", "sam", "--password-stdin"]) == 0
    line = yaml.safe_load(capsys.readouterr().out)
    assert verify_password("s3cret password", line["sam"]) and not verify_password("wrong", line["sam"])
