"""A worker killed with SIGKILL mid-call, and Redis gone mid-run.

SIGKILL: a real `hotline serve` process is killed while the bot answers; on restart the call's record is
there (what was said up to the kill), marked `incomplete` (`worker_lost`), with its recording recovered
from the raw parts. A live worker's calls are never marked (`worker_gone`).

Redis: a worker reaches Redis through a TCP proxy that is cut mid-call: the worker serves its calls
alone (answers, records, its own live views and API), counts the live events it could not share, and
lists its calls again once Redis is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from websockets.asyncio.client import connect

from agent.worker.recovery import Incarnation, worker_gone
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from testkit.tcp_proxy import TcpProxy
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import (
    OUTAGE_S,
    assert_call_left_nothing,
    eventually,
    metric,
    runtime_of,
    task_names,
)
from tests.agent.test_calls import call_id_of
from tests.agent.test_lifecycle import ENV, HOTLINE, WORKER_START_S, record_of, worker_config

REDIS_DB_URL = "redis://127.0.0.1:{port}/8"

# ------------------------------------------------------------------------------------------- SIGKILL


def serve(config: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start `hotline serve` on the config's port; returns the process and its URL once healthy."""
    port = yaml.safe_load(config.read_text())["server"]["port"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [str(HOTLINE), "--config", str(config), "--log-format", "json", "serve"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **ENV},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + WORKER_START_S
    try:
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    return process, url
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the worker did not come up"
            time.sleep(0.25)
    except BaseException:
        process.kill()  # a worker that never came up is not left running after the test
        process.wait()
        raise


@pytest.fixture
def config(tmp_path: Path) -> Iterator[Path]:
    yield worker_config(tmp_path)


async def test_a_worker_killed_mid_call_leaves_an_incomplete_record_with_its_recording(
    config: Path, tmp_path: Path
) -> None:
    """SIGKILL while the bot answers. Caller hears: the line goes dead (the platform ends the call).
    Record, after the restart: the turns up to the kill, status `incomplete`, end reason `worker_lost`,
    the recording recovered from its raw parts (as long as what was recorded), a `recovery/incomplete`
    event naming the dead process and the one that found it."""
    log = tmp_path / "serve.log"
    process, url = serve(config, log)
    try:
        sim = PiopiySimulator(url, webhook_secret=WEBHOOK_SECRET, post_events=False)
        call = await sim.place_call(to_number=SUPPORT_NUMBER)
        call_id = call_id_of(call.pcmo)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await asyncio.sleep(0.5)  # mid-answer
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        assert await call.wait_closed(10) is not None
        await call.hangup()
        before = await record_of(tmp_path / "h.db", call_id)
        assert before["status"] == "active" and before["ended_at"] is None  # left as it was
        assert (tmp_path / "rec" / call_id / "caller.raw").exists()
        dead_pid = before["meta"]["served_by"]["pid"]
        assert dead_pid == process.pid

        process, url = serve(config, log)  # the restart
        deadline = time.monotonic() + 20
        # Recovery marks the call first, then joins its recording and says so in an event: wait for
        # that last step (reading the record between the two saw no event, once, on a busy machine).
        while True:
            record = await record_of(tmp_path / "h.db", call_id)
            if any(e["source"] == "recovery" for e in record["events"]):
                break
            assert time.monotonic() < deadline, f"the restarted worker did not finish the call: {record}"
            await asyncio.sleep(0.2)
    finally:
        process.kill()
        process.wait()
    assert record["status"] == "incomplete" and record["end_reason"] == "worker_lost"
    assert [t["role"] for t in record["turns"]] == ["bot", "caller", "bot"]
    assert "opening hours" in record["turns"][1]["text"].lower()
    assert record["turns"][2]["ended_at"] is None  # the answer was cut off by the kill
    (recovery,) = [e["payload"] for e in record["events"] if e["source"] == "recovery"]
    assert recovery["served_by"]["pid"] == dead_pid and recovery["found_by"]["pid"] == process.pid
    wav = tmp_path / "rec" / f"{call_id}.wav"
    # (the worker's log says why, if recovery could not join the parts)
    assert record["recording"] is not None and wav.exists(), log.read_text()[-4000:]
    with wave.open(str(wav)) as w:
        assert w.getnchannels() == 2 and w.getnframes() / w.getframerate() >= 5.0  # greeting + question
        assert abs(w.getnframes() / w.getframerate() - recovery["recording_seconds"]) < 1.0
    assert not (tmp_path / "rec" / call_id).exists()
    assert record["ended_at"] >= record["turns"][2]["started_at"]


async def test_only_calls_of_workers_that_are_gone_are_finished() -> None:
    """Whose calls a worker may finish: never its own live ones, never a live process's, nor another
    host's unless it knows (Redis heartbeat) or it runs alone by configuration."""
    me = Incarnation("worker-b")
    sleeper = await asyncio.create_subprocess_exec("sleep", "30")
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    try:
        here = {"worker": "worker-a", "host": me.host, "boot": "earlier"}
        assert not await worker_gone(me.as_meta(), me, None, alone=True)  # ours, this start
        assert not await worker_gone({**here, "pid": sleeper.pid}, me, None, alone=True)  # alive here
        assert await worker_gone({**here, "pid": dead.pid}, me, None, alone=False)
        assert await worker_gone({**here, "pid": me.pid}, me, None, alone=False)  # this pid, another start
        elsewhere = {"worker": "worker-a", "host": "other-host", "pid": 1, "boot": "x"}
        assert not await worker_gone(elsewhere, me, None, alone=False)  # cannot know: left alone
        assert await worker_gone(elsewhere, me, None, alone=True)  # no cluster: this worker is the only one

        class Heartbeats:
            def __init__(self, alive: set[str]) -> None:
                self.alive = alive

            async def worker_alive(self, worker: str) -> bool:
                return worker in self.alive

        cluster: Any = Heartbeats({"worker-a"})
        assert not await worker_gone(elsewhere, me, cluster, alone=False)  # its heartbeat is fresh
        assert not await worker_gone({**here, "pid": dead.pid}, me, cluster, alone=False)
        assert await worker_gone(elsewhere, me, Heartbeats(set()), alone=False)  # heartbeat expired
        assert await worker_gone({**elsewhere, "worker": "worker-b"}, me, cluster, alone=False)  # our name
    finally:
        sleeper.kill()
        await sleeper.wait()


# --------------------------------------------------------------------------------------------- Redis


def _redis_up() -> bool:
    try:
        return bool(redis.Redis(socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[TcpProxy]:
    if not _redis_up():
        pytest.fail("the Redis fault test needs the local Redis (127.0.0.1:6379)")
    with TcpProxy("127.0.0.1", 6379) as proxy:
        redis.Redis.from_url(REDIS_DB_URL.format(port=6379)).flushdb()
        yield proxy
        redis.Redis.from_url(REDIS_DB_URL.format(port=6379)).flushdb()


@pytest.fixture(scope="module")
def clustered(tmp_path_factory: pytest.TempPathFactory, redis_proxy: TcpProxy) -> Iterator[Service]:
    cluster = {"redis_url": REDIS_DB_URL.format(port=redis_proxy.port), "worker_id": "worker-alone"}
    with running_service(tmp_path_factory.mktemp("redis-outage"), cluster=cluster) as service:
        yield service


def listed_calls() -> dict[str, Any]:
    entries = redis.Redis.from_url(REDIS_DB_URL.format(port=6379)).hgetall("hotline:calls")
    return {k.decode(): json.loads(v) for k, v in entries.items()}


async def test_redis_gone_mid_call_the_worker_serves_alone_then_rejoins(
    clustered: Service, redis_proxy: TcpProxy
) -> None:
    """Redis cut mid-call. Caller hears: the conversation as usual. Record: complete as usual. Meanwhile
    the worker's own live feed and /api/live-calls work (its own calls), the events it could not share
    are counted (/metrics `hotline_live_events_unshared_total`), and when Redis is back the call is
    listed for the other workers again, then unlisted when it ends."""
    runtime = runtime_of(clustered)
    assert runtime.cluster is not None
    runtime.cluster.heartbeat_s = 0.5  # notice the outage, and the return, quickly
    baseline = await task_names(runtime)
    sim = PiopiySimulator(clustered.url, webhook_secret=WEBHOOK_SECRET)
    live_url = clustered.url.replace("http", "ws", 1) + "/api/live"
    async with (
        await sim.place_call(to_number=SUPPORT_NUMBER) as call,
        connect(live_url, additional_headers=clustered.api_headers) as live,
        httpx.AsyncClient(base_url=clustered.url, headers=clustered.headers, timeout=10) as api,
    ):
        call_id = call_id_of(call.pcmo)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await eventually(lambda: call_id in listed_calls(), "the call listed in Redis")
        redis_proxy.cut()
        cut_at = time.monotonic()
        await eventually(lambda: not runtime.cluster.reachable, "the outage noticed")  # type: ignore[union-attr]
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        turn = await next_caller_turn(live, call_id)
        assert "opening hours" in turn["data"]["text"].lower()  # this worker's live feed goes on
        listing = await api.get("/api/live-calls")
        assert listing.status_code == 200 and [c["call_id"] for c in listing.json()["calls"]] == [call_id]
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        assert await metric(clustered, "hotline_live_events_unshared_total") > 0
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        redis_proxy.restore()
        await eventually(lambda: runtime.cluster.reachable, "Redis back")  # type: ignore[union-attr]
        await eventually(lambda: call_id in listed_calls(), "the call listed again")
        assert listed_calls()[call_id]["worker"] == "worker-alone"
    await eventually(lambda: call_id not in listed_calls(), "the ended call unlisted")
    async with httpx.AsyncClient(base_url=clustered.url, headers=clustered.headers) as api:
        record = (await api.get(f"/api/calls/{call_id}")).json()
    assert [t["role"] for t in record["turns"]] == ["bot", "caller", "bot"]
    assert "nine in the morning" in record["turns"][2]["text"]
    await assert_call_left_nothing(runtime, call_id, baseline)


async def next_caller_turn(live: Any, call_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        async for message in live:
            event: dict[str, Any] = json.loads(message)
            if event["call_id"] == call_id and event["kind"] == "turn" and event["data"]["role"] == "caller":
                return event
        raise AssertionError("the live feed closed")

    return await asyncio.wait_for(read(), 20)
