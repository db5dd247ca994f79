"""Call records on SQLite and on the local PostgreSQL: the public record shape, idempotent CDRs."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psycopg
import pytest

from agent.records.store import Store

PG_DSN = "postgresql://root@127.0.0.1:5432/test"


def _postgres_available() -> bool:
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = Store("sqlite:///calls.db", base_dir=tmp_path)
        await s.init()
        yield s
        await s.close()
        return
    if not _postgres_available():
        if __import__("os").environ.get("CI"):
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    schema = f"hotline_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    s = Store(f"{PG_DSN}?options=-csearch_path%3D{schema}")
    await s.init()
    try:
        yield s
    finally:
        await s.close()
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


async def test_call_record_roundtrip(store: Store) -> None:
    t0 = time.time()
    await store.create_call(
        id="c_1",
        cmiuuid="u-1",
        bot="support_desk",
        from_number="919876543210",
        to_number="918040001000",
        status="answered",
        started_at=t0,
        sample_rate=8000,
    )
    await store.update_call("c_1", status="active", connected_at=t0 + 0.2)
    turn = await store.add_turn("c_1", idx=0, role="bot", text="Hello there", started_at=t0 + 0.3)
    await store.update_turn(
        turn, ended_at=t0 + 1.5, interrupted=True, heard_text="Hello", latency={"tts_ms": 80}
    )
    await store.add_turn("c_1", idx=1, role="caller", text="Hi", started_at=t0 + 2, ended_at=t0 + 2.5)
    await store.add_action("c_1", "answer", [{"action": "stream"}], {"rule": "number_routing"}, t0)
    await store.add_event(
        source="piopiy", status="in_answered", payload={"a": 1}, at=t0, call_id=None, cmiuuid="u-1"
    )
    await store.add_event(source="stream", status="connected", payload={}, at=t0, call_id="c_1", cmiuuid=None)
    await store.add_event(source="piopiy", status="ringing", payload={}, at=t0, call_id=None, cmiuuid="other")
    await store.update_call("c_1", status="completed", ended_at=t0 + 10, end_reason="caller_hangup")

    record = await store.call_record("c_1")
    assert record is not None
    assert record["call_id"] == "c_1" and record["status"] == "completed" and record["duration_s"] == 10.0
    assert record["from"] == "919876543210" and record["bot"] == "support_desk"
    assert [t["role"] for t in record["turns"]] == ["bot", "caller"]
    first = record["turns"][0]
    assert first["interrupted"] and first["heard_text"] == "Hello" and first["latency_ms"] == {"tts_ms": 80}
    assert first["start_ms"] == 300 and first["end_ms"] == 1500 and first["started_at"].endswith("Z")
    (action,) = record["actions"]
    assert action["type"] == "answer" and action["payload"] == [{"action": "stream"}]
    assert action["reason"] == {"rule": "number_routing"} and action["at"] == record["started_at"]
    assert [e["status"] for e in record["events"]] == [
        "in_answered",
        "connected",
    ]  # joined by cmiuuid or call id
    assert await store.call_id_for(cmiuuid="u-1") == "c_1"
    assert await store.call_record("nope") is None


async def test_cdr_retries_are_idempotent(store: Store) -> None:
    await store.create_call(id="c_2", cmiuuid="u-2", status="completed", started_at=time.time())
    assert await store.upsert_cdr("u-2", "a", {"status": "answered", "duration": 12}, time.time()) == (
        True,
        True,
    )
    # (first delivery, kept): without a time of its own, the latest delivery is kept
    assert await store.upsert_cdr("u-2", "a", {"status": "answered", "duration": 13}, time.time()) == (
        False,
        True,
    )
    assert await store.upsert_cdr("u-2", "b", {"status": "answered"}, time.time()) == (True, True)
    record = await store.call_record("c_2")
    assert record is not None
    assert [(c["leg"], c["deliveries"]) for c in record["cdr"]] == [("a", 2), ("b", 1)]
    assert record["cdr"][0]["duration"] == 13  # the latest delivery wins


async def test_list_calls_filters_and_pages(store: Store) -> None:
    t0 = time.time()
    for i in range(5):
        await store.create_call(
            id=f"c_{i}", bot="order_line" if i % 2 else "support_desk", status="completed", started_at=t0 + i
        )
    total, calls = await store.list_calls(limit=2)
    assert total == 5 and [c["call_id"] for c in calls] == ["c_4", "c_3"]
    total, calls = await store.list_calls(bot="order_line")
    assert total == 2 and {c["call_id"] for c in calls} == {"c_1", "c_3"}


IMMUTABLE_SHM = """
import asyncio, os, subprocess, sys, time
from agent.records.database import StoreUnwritable
from agent.records.store import Store

async def main(db: str) -> None:
    store = Store(f"sqlite:///{db}")
    await store.init()
    await store.create_call(id="c_1", status="active", started_at=time.time())
    shm = db + "-shm"
    fd = os.open(shm, os.O_RDONLY)
    os.fsync(fd)  # the mapped pages are clean: the next write through the mapping faults
    os.close(fd)
    subprocess.run(["chattr", "+i", shm], check=True)
    try:
        time.sleep(0.2)
        assert store.unwritable_reason() is not None
        for attempt in (store.call_record("c_1"), store.update_call("c_1", status="completed")):
            try:
                await attempt
            except StoreUnwritable:
                continue
            raise AssertionError("the store was touched")
        await store.close()  # declined: closing would checkpoint through the mapping
        assert store.left_open
    finally:
        subprocess.run(["chattr", "-i", shm], check=True)
    store.left_open = False
    await store.update_call("c_1", status="completed")
    assert (await store.call_record("c_1"))["status"] == "completed"
    await store.close()
    print("survived")

asyncio.run(main(sys.argv[1]))
"""


def test_an_immutable_sqlite_shm_is_refused_instead_of_crashing_the_process(tmp_path: Path) -> None:
    """SQLite maps `<db>-shm` into memory; once it cannot be written (chattr +i, a file system gone
    read-only), touching it kills the process with SIGBUS. The store refuses instead (StoreUnwritable,
    an OSError the record writer retries) and works again once the file is writable. In a child
    process, so that a SIGBUS fails the test instead of ending the test run."""
    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        pytest.skip("needs chattr and CAP_LINUX_IMMUTABLE on an ext2/3/4-like file system")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    child = subprocess.run(
        [sys.executable, "-c", IMMUTABLE_SHM, str(tmp_path / "h.db")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0 and "survived" in child.stdout, (child.returncode, child.stderr[-2000:])
