"""The database unavailable: record writes are kept in order and written when it is back; nothing is lost.

PostgreSQL goes away for real: the service reaches it through a TCP proxy that resets every connection
while cut (testkit/tcp_proxy.py). SQLite's version is a file locked by another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from agent.records.call_record import CallRecord
from agent.records.record_writer import RecordWriter
from agent.records.store import Store
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from testkit.tcp_proxy import TcpProxy
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import (
    OUTAGE_S,
    assert_call_left_nothing,
    events_of,
    eventually,
    in_service,
    metric,
    runtime_of,
    task_names,
)
from tests.agent.records.test_store import PG_DSN, _postgres_available
from tests.agent.test_calls import call_id_of


@pytest.fixture(scope="module")
def schema() -> Iterator[str]:
    """A private schema in the local PostgreSQL (`test` database)."""
    if not _postgres_available():
        pytest.fail("the database fault tests need the local PostgreSQL (127.0.0.1:5432, database test)")
    name = f"hotline_faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    try:
        yield name
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture(scope="module")
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", 5432) as p:
        yield p


def proxied_url(proxy: TcpProxy, schema: str) -> str:
    return f"postgresql://root@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}"


@pytest.fixture
async def store(proxy: TcpProxy, schema: str) -> AsyncIterator[Store]:
    proxy.restore()
    s = Store(proxied_url(proxy, schema))
    await s.init()
    yield s
    proxy.restore()
    await s.close()


async def test_writes_during_an_outage_land_in_order_when_the_database_is_back(
    store: Store, proxy: TcpProxy
) -> None:
    """A call's turns, their updates, events and final state, written while PostgreSQL is away: each
    write returns at once (the call goes on), and all of them land, in order, when it is back."""
    call_id = f"c_{uuid.uuid4().hex}"
    await store.create_call(id=call_id, status="answered", started_at=time.time())
    writer = RecordWriter(store)
    record = CallRecord(writer, call_id)
    greeting = await record.turn("bot", "Hello, how can I help?", time.time())
    proxy.cut()
    for n in range(20):
        turn = await record.turn("caller" if n % 2 else "bot", f"line {n}", time.time())
        await record.update_turn(turn, heard_text=f"heard {n}")
        await record.event("test", f"event {n}", {"n": n})
    await record.update_turn(greeting, interrupted=True)
    await record.update(status="completed", ended_at=time.time())
    assert writer.pending == 62 and writer.waiting_calls == 1  # kept, nothing lost yet
    await asyncio.sleep(OUTAGE_S)
    proxy.restore()
    assert await writer.flush(30) == 0
    saved = await store.call_record(call_id)
    assert saved is not None and saved["status"] == "completed"
    assert [t["text"] for t in saved["turns"]] == ["Hello, how can I help?"] + [
        f"line {n}" for n in range(20)
    ]
    assert [t["heard_text"] for t in saved["turns"][1:]] == [f"heard {n}" for n in range(20)]
    assert saved["turns"][0]["interrupted"]
    assert [e["status"] for e in saved["events"]] == [f"event {n}" for n in range(20)]
    assert writer.written_late == 62 and writer.dropped == 0


async def test_a_write_the_database_refuses_is_dropped_not_retried(store: Store) -> None:
    """A write that can never succeed (a turn of a call that does not exist) is logged and dropped;
    the writes after it go on."""
    writer = RecordWriter(store)
    ghost = CallRecord(writer, "c_no_such_call")
    await ghost.turn("bot", "nobody hears this", time.time())
    await ghost.event("test", "still written", {})
    assert writer.pending == 0 and writer.dropped == 1
    assert "still written" in [e["status"] for e in (await store_events(store, "c_no_such_call"))]


async def store_events(store: Store, call_id: str) -> list[dict[str, object]]:
    from sqlalchemy import select

    from agent.records.tables import EventRow

    async with store._session() as s:
        rows = (await s.scalars(select(EventRow).where(EventRow.call_id == call_id))).all()
    return [{"status": r.status} for r in rows]


async def test_what_is_still_pending_at_shutdown_is_counted_as_lost(store: Store, proxy: TcpProxy) -> None:
    writer = RecordWriter(store)
    record = CallRecord(writer, "c_shutdown")
    proxy.cut()
    await record.event("test", "never written", {})
    assert await writer.flush(0.5) == 1
    assert writer.pending == 0 and writer.dropped == 1


async def test_a_locked_sqlite_file_delays_writes_and_loses_none(tmp_path: Path) -> None:
    """Another process holds SQLite's write lock for a while: the writes wait (the call stops waiting
    for them after a second) and all land once the lock is released."""
    store = Store("sqlite:///calls.db", base_dir=tmp_path)
    await store.init()
    await store.create_call(id="c_locked", status="active", started_at=time.time())
    writer = RecordWriter(store)
    record = CallRecord(writer, "c_locked")
    locked, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        conn = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(10)
        conn.execute("COMMIT")
        conn.close()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert await asyncio.to_thread(locked.wait, 5)
        for n in range(3):
            await record.event("test", f"while locked {n}", {})
        await record.update(status="completed")
        assert writer.pending == 4
        await asyncio.sleep(OUTAGE_S / 2)
    finally:
        release.set()
        await asyncio.to_thread(holder.join)
    assert await writer.flush(30) == 0
    saved = await store.call_record("c_locked")
    assert saved is not None and saved["status"] == "completed"
    assert [e["status"] for e in saved["events"]] == [f"while locked {n}" for n in range(3)]
    await store.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, proxy: TcpProxy, schema: str) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp("db-outage")
    storage = {
        "url": proxied_url(proxy, schema),
        "data_dir": str(directory),
        "recordings_dir": str(directory / "recordings"),
    }
    with running_service(directory, storage=storage) as service:
        yield service


async def test_a_call_goes_on_while_the_database_is_away_and_its_record_is_complete(
    service: Service, proxy: TcpProxy
) -> None:
    """PostgreSQL away mid-call (and when the call ends). Caller hears: the whole conversation as usual
    (the answer to their question, no gap). Record: once the database is back, everything: the three
    turns, the events up to `stream/closed`, status `completed`; /metrics counted the writes kept."""
    proxy.restore()
    runtime = runtime_of(service)
    await eventually(lambda: runtime.writer.pending == 0, "the service idle")
    baseline = await task_names(runtime)
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET, post_events=False)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        proxy.cut()
        cut_at = time.monotonic()
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        assert runtime.writer.pending > 0 and await metric(service, "hotline_record_writes_pending") > 0
    await eventually(lambda: call_id not in runtime.calls.sessions, "the call closed")
    assert runtime.writer.pending > 0  # the final state too is waiting for the database
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
    proxy.restore()
    await eventually(lambda: runtime.writer.pending == 0, "the kept writes written", timeout=30)
    record = await in_service(runtime, lambda: runtime.store.call_record(call_id))
    assert record is not None and record["status"] == "completed" and record["ended_at"]
    assert [t["role"] for t in record["turns"]] == ["bot", "caller", "bot"]
    assert "opening hours" in record["turns"][1]["text"].lower()
    assert "nine in the morning" in record["turns"][2]["text"]
    assert record["turns"][1]["latency_ms"]["response_ms"] > 0  # updates of a turn kept, too
    assert events_of(record, "stream", "connected") and events_of(record, "stream", "closed")
    assert record["recording"] is not None
    assert await metric(service, "hotline_record_writes_late_total") > 0
    assert await metric(service, "hotline_record_writes_dropped_total") == 0
    await assert_call_left_nothing(runtime, call_id, baseline)


async def test_a_call_that_starts_while_the_database_is_away_is_answered_and_fully_recorded(
    service: Service, proxy: TcpProxy
) -> None:
    """PostgreSQL away when PIOPIY posts answer_url and for the first seconds of the stream. answer_url:
    200 with the bot's stream PCMO, answered from memory. Caller hears: the greeting, then the answer to
    their question. Record, once the database is back: the call row (cmiuuid, answer body), the `answer`
    action, PIOPIY's events posted during the outage, the turns, `stream/connected` to `stream/closed`,
    status `completed`; the writes in the order they were made, none dropped."""
    proxy.restore()
    runtime = runtime_of(service)
    await eventually(lambda: runtime.writer.pending == 0, "the service idle")
    baseline = await task_names(runtime)
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)  # events and the CDR too
    proxy.cut()
    cut_at = time.monotonic()
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        assert [a["action"] for a in call.pcmo] == ["stream"]
        call_id = call_id_of(call.pcmo)
        await call.wait_for_bot_audio(timeout=15)  # the greeting
        assert all(p.status == 200 for p in call.posts)  # in_answered, stream_connected: kept too
        assert runtime.writer.pending > 0 and runtime.writer.waiting_calls == 1
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        proxy.restore()
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
    await eventually(lambda: runtime.writer.pending == 0, "the kept writes written", timeout=30)
    record = await in_service(runtime, lambda: runtime.store.call_record(call_id))
    assert record is not None and record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert record["cmiuuid"] == call.cmiuuid and record["meta"]["answer"]["cmiuuid"] == call.cmiuuid
    assert record["bot"] == "support_desk" and record["sample_rate"] == 8000
    assert [a["type"] for a in record["actions"]] == ["answer"]
    assert [t["role"] for t in record["turns"]] == ["bot", "caller", "bot"]
    assert "nine in the morning" in record["turns"][2]["text"]
    events = [(e["source"], e["status"]) for e in record["events"]]
    # PIOPIY's stream and hangup events race ours: posted as the socket opens and closes.
    assert sorted(events) == sorted(
        [("piopiy", "in_answered"), ("stream", "connected"), ("piopiy", "stream_connected"),
         ("stream", "closed"), ("piopiy", "STREAM_DISCONNECTED"), ("piopiy", "hangup")]
    )  # fmt: skip
    assert events[0] == ("piopiy", "in_answered")  # posted before the socket opened: first in the lane
    assert events.index(("stream", "connected")) < events.index(("stream", "closed"))
    assert record["recording"] is not None and record["cdr"][0]["status"] == "answered"
    assert await metric(service, "hotline_record_writes_late_total") > 0
    assert await metric(service, "hotline_record_writes_dropped_total") == 0
    await assert_call_left_nothing(runtime, call_id, baseline)
