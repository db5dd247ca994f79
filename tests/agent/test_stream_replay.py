"""A stream token opens its call once, wherever and whenever it is replayed.

The used-token set in a worker's memory forgets on restart and is not shared between workers, so the
stream claims its call in the store: one conditional update from `answered` to `active` that one
worker wins. A finished call's ws_url replayed after a restart (a real `hotline serve` process) or on
another worker (two workers on the local PostgreSQL) is refused with 1008 and changes nothing: not the
turns, not the duration, not the recording. Two streams racing for one call on two workers: one wins.
With the store unreachable, only a call answered by this very process streams (from memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import psycopg
import pytest
import redis
from sqlalchemy.exc import OperationalError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.security import StreamTokens
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import API_HEADERS, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import runtime_of
from tests.agent.records.test_store import PG_DSN, _postgres_available
from tests.agent.test_calls import call_id_of, final_record
from tests.agent.test_faults_process import serve
from tests.agent.test_lifecycle import wait_exit, worker_config

REDIS_URL = "redis://127.0.0.1:6379/10"  # this file's own database
STREAM_SECRET = b"test-stream-secret-0123456789abcdef"  # what the test services are given


async def replay(ws_url: str) -> int | None:
    """Open a stream socket like PIOPIY would, send a little caller audio, and return its close code
    (None: it stayed open, the call streamed)."""
    async with connect(ws_url) as ws:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(b"\x00\x00" * 1600)
        try:
            await asyncio.wait_for(ws.wait_closed(), 5)
        except TimeoutError:
            return None
    return ws.close_code


async def record_of(base_url: str, call_id: str, *, ended: bool = False) -> dict[str, Any]:
    """The call's record from the API; with `ended`, once the service has closed the call."""
    deadline = asyncio.get_running_loop().time() + 30
    async with httpx.AsyncClient(base_url=base_url, headers=API_HEADERS) as http:
        while True:
            record: dict[str, Any] = (await http.get(f"/api/calls/{call_id}")).json()
            if not ended or (record.get("ended_at") and not record.get("live")):
                return record
            assert asyncio.get_running_loop().time() < deadline, f"call {call_id} not closed: {record}"
            await asyncio.sleep(0.1)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def a_whole_call(sim: PiopiySimulator) -> tuple[str, str]:
    """Greeting, a question, its answer, hang-up; returns (call id, ws_url)."""
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=20, since=call.now())
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        return call_id_of(call.pcmo), call.ws_url


# ------------------------------------------------------------------------------------------- restart


def config_file(tmp_path: Path) -> Path:
    return worker_config(tmp_path)


async def test_a_finished_calls_ws_url_is_refused_after_a_restart_and_changes_nothing(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    process, url = serve(config, tmp_path / "serve.log")
    try:
        call_id, ws_url = await a_whole_call(PiopiySimulator(url, webhook_secret=WEBHOOK_SECRET))
        before = await record_of(url, call_id, ended=True)
        assert [t["role"] for t in before["turns"]] == ["bot", "caller", "bot"]
        wav = tmp_path / "rec" / f"{call_id}.wav"
        recording = sha256(wav)
        assert await replay(ws_url) == 1008  # the same process: its memory knows the token

        process.send_signal(signal.SIGTERM)
        assert await wait_exit(process, 60) == 0
        process, url = serve(config, tmp_path / "serve.log")  # a fresh memory
        assert await replay(ws_url) == 1008
        assert await replay(ws_url) == 1008
        await asyncio.sleep(1.0)  # a reopened call would be greeting and recording by now
        after = await record_of(url, call_id)
    finally:
        process.kill()
        process.wait()
    assert after == before  # turns, duration, status, events: all as they were
    assert sha256(wav) == recording and not (tmp_path / "rec" / call_id).exists()
    refusals = [json.loads(line)["msg"] for line in (tmp_path / "serve.log").read_text().splitlines()
                if line.startswith("{") and "stream refused" in line]  # fmt: skip
    # Before the restart and for the second replay after it, the process's memory knew the token; the
    # first replay after the restart was refused by the store.
    assert [m.split(": ", 1)[1].split(" (")[0] for m in refusals] == [
        "token already used",
        "it has streamed or ended already",
        "token already used",
    ]


# ---------------------------------------------------------------------------------- two workers (PG)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Service]]:
    if not _postgres_available():
        pytest.fail("the two-worker test needs the local PostgreSQL")
    schema = f"hotline_replay_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    suffix = uuid.uuid4().hex[:6]  # commands go to workers by name: never another test's
    try:
        with contextlib.ExitStack() as stack:
            services = []
            for name in ("a", "b"):
                directory = tmp_path_factory.mktemp(f"replay-{name}")
                storage = {"url": f"{PG_DSN}?options=-csearch_path%3D{schema}", "data_dir": str(directory),
                           "recordings_dir": str(directory / "rec")}  # fmt: skip
                cluster = {"redis_url": REDIS_URL, "worker_id": f"replay-{name}-{suffix}"}
                services.append(
                    stack.enter_context(running_service(directory, storage=storage, cluster=cluster))
                )
            yield services[0], services[1]
    finally:
        redis.Redis.from_url(REDIS_URL).flushdb()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def on(service: Service, ws_url: str) -> str:
    """The same ws_url, sent to another worker (a balancer may pick any)."""
    path = ws_url.split("/stream?", 1)[1]
    return service.url.replace("http", "ws", 1) + "/stream?" + path


async def test_a_finished_calls_ws_url_is_refused_on_another_worker(workers: tuple[Service, Service]) -> None:
    a, b = workers
    call_id, ws_url = await a_whole_call(PiopiySimulator(a.url, webhook_secret=WEBHOOK_SECRET))
    before = await final_record(a, call_id)
    wav = a.data_dir / "rec" / f"{call_id}.wav"
    recording = sha256(wav)
    assert await replay(on(b, ws_url)) == 1008  # worker b never saw the token
    assert await replay(on(a, ws_url)) == 1008
    await asyncio.sleep(1.0)
    assert await record_of(b.url, call_id) == before
    assert sha256(wav) == recording
    assert (
        not (b.data_dir / "rec" / f"{call_id}.wav").exists() and not (b.data_dir / "rec" / call_id).exists()
    )


async def test_two_workers_racing_for_one_stream_one_wins(workers: tuple[Service, Service]) -> None:
    a, b = workers
    pcmo = await PiopiySimulator(a.url, webhook_secret=WEBHOOK_SECRET).answer(to_number=SUPPORT_NUMBER)
    call_id = call_id_of(pcmo)
    ws_url = next(x for x in pcmo if x["action"] == "stream")["ws_url"]

    async def stream(url: str) -> tuple[int | None, bool]:
        """(close code, whether the bot spoke) of one attempt; the winner hangs up after the greeting."""
        async with connect(url) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(b"\x00\x00" * 1600)
                message = await asyncio.wait_for(ws.recv(), 20)
                spoke = json.loads(message).get("type") == "streamAudio"
                await ws.close(1000)
                return None, spoke
        return ws.close_code, False

    results = await asyncio.gather(stream(on(a, ws_url)), stream(on(b, ws_url)))
    assert sorted(results, key=str) == sorted([(None, True), (1008, False)], key=str), results
    record = await final_record(a, call_id, timeout=30)
    assert [e["status"] for e in record["events"] if e["source"] == "stream"].count("connected") == 1
    winner = "a" if results[0][0] is None else "b"
    assert record["meta"]["served_by"]["worker"].startswith(f"replay-{winner}-")
    assert record["status"] == "completed" and [t["role"] for t in record["turns"]] == ["bot"]


# ------------------------------------------------------------------------------ store unreachable


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("replay-alone")) as service:
        yield service


async def test_with_the_store_unreachable_only_a_call_answered_here_streams(
    alone: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim cannot reach the store: a call this worker answered goes on (its claim is kept and
    lands later, with the rest of its record); a call another worker (or an earlier start) answered is
    refused with 1013, since only the store knows whether it already streamed."""
    runtime = runtime_of(alone)

    async def unreachable(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("UPDATE calls", {}, ConnectionResetError("connection reset"))

    monkeypatch.setattr(runtime.store, "claim_stream", unreachable)
    elsewhere = StreamTokens(STREAM_SECRET, 600)  # same secret, another process's memory
    foreign = elsewhere.call_id_for(f"answered-elsewhere-{uuid.uuid4()}")
    exp, token = elsewhere.issue(foreign, "support_desk", "919876543210", SUPPORT_NUMBER)
    query = {"call": foreign, "bot": "support_desk", "from": "919876543210", "to": SUPPORT_NUMBER,
             "exp": exp, "token": token}  # fmt: skip
    assert await replay(alone.url.replace("http", "ws", 1) + "/stream?" + urlencode(query)) == 1013

    sim = PiopiySimulator(alone.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_for_bot_audio(timeout=20)  # the greeting: the call goes on
        monkeypatch.undo()  # the store is back
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        call_id = call_id_of(call.pcmo)
    record = await final_record(alone, call_id, timeout=60)
    assert record["status"] == "completed" and record["meta"]["served_by"]["pid"] == runtime.incarnation.pid
    assert record["connected_at"] is not None and [t["role"] for t in record["turns"]] == ["bot"]
    assert await record_of(alone.url, foreign) == {"error": "no such call", "detail": foreign}
