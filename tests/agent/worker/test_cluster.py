"""Two workers sharing the local PostgreSQL (records) and Redis (live events, live calls, commands):
calls land on both, and either worker's API sees and controls all of them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import redis
from websockets.asyncio.client import connect

from agent.dashboard.auth import COOKIE
from agent.worker.listen import CALLER, unpack
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator, SimulatedCall
from tests.agent.conftest import API_HEADERS, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.records.test_store import PG_DSN, _postgres_available
from tests.agent.test_calls import final_record
from tests.agent.test_dashboard import USERS, csrf_of, login

REDIS_URL = "redis://127.0.0.1:6379/7"
BILLING = [918040001101, 918040001102]


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    if not (_postgres_available() and _redis_available()):
        pytest.fail(
            "the two-worker test needs the local PostgreSQL and Redis (see README: Running in production)"
        )
    schema = f"hotline_cluster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    store_url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
    try:
        services = []
        with contextlib.ExitStack() as stack:
            for name in ("a", "b"):
                directory = tmp_path_factory.mktemp(f"worker-{name}")
                storage = {
                    "url": store_url,
                    "data_dir": str(directory),
                    "recordings_dir": str(directory / "rec"),
                }
                cluster = {"redis_url": REDIS_URL, "worker_id": f"worker-{name}"}
                dashboard = {"users": USERS}
                services.append(
                    stack.enter_context(
                        running_service(directory, storage=storage, cluster=cluster, dashboard=dashboard)
                    )
                )
            yield services[0], services[1]
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def call_id_of(call: SimulatedCall) -> str:
    return str(httpx.URL(call.ws_url).params["call"])


async def live_turns(url: str, call_id: str, found: asyncio.Future[dict[str, Any]]) -> None:
    """Watch a worker's live feed for the first caller turn of `call_id`."""
    ws_url = url.replace("http", "ws", 1) + "/api/live"
    async with connect(ws_url, additional_headers=API_HEADERS) as ws:
        async for message in ws:
            event = json.loads(message)
            if event["call_id"] == call_id and event["kind"] == "turn" and event["data"]["role"] == "caller":
                found.set_result(event)
                return


def is_bridge(control: Any) -> bool:
    return any(a.get("action") == "bridge" for a in getattr(control, "actions", None) or [])


def is_hangup(control: Any) -> bool:
    return any(a.get("action") == "hangup" for a in getattr(control, "actions", None) or [])


async def test_two_workers_share_live_calls_events_and_supervisor_commands(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    sim_a = PiopiySimulator(a.url, webhook_secret=WEBHOOK_SECRET)
    sim_b = PiopiySimulator(b.url, webhook_secret=WEBHOOK_SECRET)
    async with (
        await sim_a.place_call(to_number=SUPPORT_NUMBER) as on_a,
        await sim_b.place_call(to_number=SUPPORT_NUMBER, from_number="919800000002") as on_b,
        httpx.AsyncClient(base_url=b.url, headers=b.headers, timeout=10) as api_b,
        httpx.AsyncClient(base_url=a.url, headers=a.headers, timeout=10) as api_a,
    ):
        first, second = call_id_of(on_a), call_id_of(on_b)
        await asyncio.gather(on_a.wait_until_bot_silent(0.8, 30), on_b.wait_until_bot_silent(0.8, 30))
        # Either worker lists both calls, with their owners.
        live = (await api_b.get("/api/live-calls")).json()
        owners = {c["call_id"]: c["worker"] for c in live["calls"]}
        assert live["worker"] == "worker-b" and owners == {first: "worker-a", second: "worker-b"}

        # Worker b's live feed shows what the caller on worker a says.
        found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(live_turns(b.url, first, found))
        await asyncio.sleep(0.3)  # subscribed
        await on_a.say_pcm(caller_says("What are your opening hours?"), 8000)
        event = await asyncio.wait_for(found, 15)
        assert "opening hours" in event["data"]["text"].lower()
        watcher.cancel()
        await on_a.wait_for_bot_audio(timeout=10, since=on_a.now())
        await on_a.wait_until_bot_silent(1.0, 30)

        # "Transfer now" on worker b reaches the call on worker a: the bridge goes out there.
        response = await api_b.post(
            f"/api/calls/{first}/transfer", json={"department": "billing", "user": "sam"}
        )
        assert response.status_code == 202 and response.json()["worker"] == "worker-a"
        bridge = await on_a.wait_for_control(is_bridge, timeout=15)
        assert [c["number"] for c in bridge.actions[0]["connect"]] == BILLING
        # The agent's answer, posted by PIOPIY to worker b, reaches worker a's call.
        posted = await on_a.event("out_answered", leg="b")
        assert posted is not None and posted.status == 200

        # "Hang up" on worker a reaches the call on worker b.
        response = await api_a.post(f"/api/calls/{second}/hangup", json={"user": "sam"})
        assert response.status_code == 202 and response.json()["worker"] == "worker-b"
        await on_b.wait_for_control(is_hangup, timeout=10)
        bad = await api_a.post(f"/api/calls/{first}/transfer", json={"department": "+919999999999"})
        assert bad.status_code == 422  # a number is never a department
    record = await final_record(a, first)
    other = await final_record(a, second)  # stored by worker b, read on worker a
    supervised = [x for x in record["actions"] if x["type"] == "supervisor"]
    assert supervised[0]["payload"] == {"action": "transfer", "department": "billing"}
    assert supervised[0]["reason"] == {"by": "supervisor", "user": "sam"}
    assert ("transfer", "answered") in [(e["source"], e["status"]) for e in record["events"]]
    assert [x["payload"]["action"] for x in other["actions"] if x["type"] == "supervisor"] == ["hangup"]


async def test_one_dashboard_sees_listens_to_and_controls_a_call_on_the_other_worker(
    workers: tuple[Service, Service],
) -> None:
    a, b = workers
    sim_a = PiopiySimulator(a.url, webhook_secret=WEBHOOK_SECRET)
    words = caller_says("What are your opening hours?")
    async with (
        await sim_a.place_call(to_number=SUPPORT_NUMBER) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as dash_b,
    ):
        call_id = call_id_of(on_a)
        await login(dash_b)
        await on_a.wait_until_bot_silent(0.8, 30)
        listed = (await dash_b.get("/dashboard/live.json")).json()["calls"]
        assert {c["call_id"]: c["worker"] for c in listed}[call_id] == "worker-a"

        # Listen-in on worker b to the call on worker a: its audio crosses Redis.
        heard = bytearray()
        cookie = {"Cookie": f"{COOKIE}={dash_b.cookies[COOKIE]}"}
        ws_url = b.url.replace("http", "ws", 1) + f"/dashboard/listen/{call_id}"
        async with connect(ws_url, additional_headers=cookie) as ear:

            async def hear() -> None:
                async for message in ear:
                    channel, rate, pcm = unpack(bytes(message))  # type: ignore[arg-type]
                    assert rate == 8000
                    if channel == CALLER:
                        heard.extend(pcm)
                        if len(heard) >= len(words) + 8000:
                            return

            listening = asyncio.create_task(hear())
            await asyncio.sleep(0.5)  # the lease reached worker a
            await on_a.say_pcm(words, 8000)
            await asyncio.wait_for(listening, 20)
        assert bytes(heard) in on_a.caller_audio()

        # "Transfer now" on worker b's dashboard: the bridge goes out on worker a.
        view = await dash_b.get(f"/dashboard/calls/{call_id}")
        assert "Listen in" in view.text and "Transfer to billing" in view.text
        answer = await dash_b.post(
            f"/dashboard/calls/{call_id}/transfer", data={"department": "billing", "csrf": csrf_of(view.text)}
        )
        assert answer.headers["location"].endswith("flash=transferred")
        bridge = await on_a.wait_for_control(is_bridge, timeout=15)
        assert [c["number"] for c in bridge.actions[0]["connect"]] == BILLING
    record = await final_record(a, call_id)
    listens = [
        e["payload"] for e in record["events"] if (e["source"], e["status"]) == ("supervisor", "listen")
    ]
    assert listens == [{"user": "sam"}]  # renewals of the lease are not new listeners
    supervised = [x["payload"] for x in record["actions"] if x["type"] == "supervisor"]
    assert supervised == [{"action": "transfer", "department": "billing"}]
