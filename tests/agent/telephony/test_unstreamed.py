"""Calls answered whose stream never connected are closed (`abandoned` inbound, `unanswered` outbound):
by the store's conditional updates, on SQLite and PostgreSQL, by the sweep once their stream token
expired (at start-up and periodically), and never a call whose stream was claimed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.records.store import Store
from agent.telephony.unstreamed import STREAM_NEVER_CONNECTED, sweep, sweep_loop
from tests.agent.conftest import running_service
from tests.agent.records.test_store import store as store

TTL = 600.0
SERVED_BY = {"worker": "w", "host": "h", "pid": 1, "boot": "b"}


def cid(n: int) -> str:
    return f"c_{n:032x}"


async def test_the_sweep_ends_calls_whose_token_expired_and_no_other(store: Store) -> None:
    now = time.time()
    await store.create_call(id=cid(1), bot="support_desk", status="answered", started_at=now - TTL - 5)
    await store.create_call(id=cid(2), bot="support_desk", status="answered", started_at=now - 30)
    await store.create_call(id=cid(3), bot="order_line", direction="outbound", status="dialing",
                            started_at=now - TTL - 1)  # fmt: skip
    await store.create_call(id=cid(4), bot="support_desk", status="active", started_at=now - TTL - 5,
                            connected_at=now - TTL - 4)  # fmt: skip
    await store.create_call(id=cid(5), status="unrouted", started_at=now - TTL - 5, ended_at=now - TTL - 5)
    counted: list[tuple[str, str]] = []
    assert await sweep(store, TTL, lambda bot, status: counted.append((bot, status)), now=now) == 2
    assert sorted(counted) == [("order_line", "unanswered"), ("support_desk", "abandoned")]
    one, two, three, four, five = [await store.call_record(cid(i)) for i in range(1, 6)]
    assert one and one["status"] == "abandoned" and one["end_reason"] == STREAM_NEVER_CONNECTED
    assert one["duration_s"] == TTL  # ended when its token expired, not when the sweep ran
    assert three and three["status"] == "unanswered" and three["end_reason"] == STREAM_NEVER_CONNECTED
    assert two and two["status"] == "answered" and two["ended_at"] is None
    assert four and four["status"] == "active" and five and five["status"] == "unrouted"
    # An expired call can no longer be claimed by a stream; a fresh one can, once.
    assert await store.claim_stream(cid(1), connected_at=now, served_by=SERVED_BY, absent={}) is None
    assert await store.claim_stream(cid(2), connected_at=now, served_by=SERVED_BY, absent={}) is not None
    assert await store.claim_stream(cid(2), connected_at=now, served_by=SERVED_BY, absent={}) is None
    assert await sweep(store, TTL, lambda bot, status: None, now=now + TTL) == 0  # claimed: never swept


async def test_a_hangup_or_cdr_closes_only_a_call_that_never_streamed(store: Store) -> None:
    now = time.time()
    await store.create_call(id=cid(1), bot="support_desk", status="answered", started_at=now)
    await store.create_call(id=cid(2), bot="support_desk", status="answered", started_at=now)
    assert await store.claim_stream(cid(2), connected_at=now, served_by=SERVED_BY, absent={}) is not None
    assert await store.close_unstreamed(cid(1), end_reason="x", ended_at=now + 3) == (
        "support_desk",
        "abandoned",
    )
    assert await store.close_unstreamed(cid(1), end_reason="y", ended_at=now + 9) is None  # once
    assert await store.close_unstreamed(cid(2), end_reason="x", ended_at=now + 3) is None  # it streams
    record = await store.call_record(cid(1))
    assert record and record["end_reason"] == "x" and record["duration_s"] == 3.0
    streamed = await store.call_record(cid(2))
    assert streamed and streamed["status"] == "active" and streamed["meta"]["served_by"] == SERVED_BY


async def test_claims_race_and_only_one_wins(store: Store) -> None:
    """Many streams for one call at once (several workers): exactly one claim wins."""
    await store.create_call(id=cid(7), bot="support_desk", status="answered", started_at=time.time())
    claims = [
        store.claim_stream(cid(7), connected_at=time.time(), served_by={**SERVED_BY, "n": n}, absent={})
        for n in range(8)
    ]
    results = await asyncio.gather(*claims)
    assert sum(r is not None for r in results) == 1


async def test_the_sweep_runs_again_and_again(sqlite_store: Store) -> None:
    """A call whose token expires after the first sweep is ended by a later one."""
    ttl = 0.5
    await sqlite_store.create_call(id=cid(1), bot="support_desk", status="answered", started_at=time.time())
    loop = asyncio.create_task(sweep_loop(sqlite_store, ttl, lambda bot, status: None, every_s=0.1))
    try:
        await asyncio.sleep(0.05)  # the first sweep came and went
        record = await sqlite_store.call_record(cid(1))
        assert record and record["status"] == "answered"
        deadline = time.monotonic() + 20  # generous: a busy machine
        while (record := await sqlite_store.call_record(cid(1))) and record["status"] == "answered":
            assert time.monotonic() < deadline, "no later sweep ended the call"
            await asyncio.sleep(0.1)
        assert record and record["status"] == "abandoned" and record["end_reason"] == STREAM_NEVER_CONNECTED
    finally:
        loop.cancel()


def test_a_starting_worker_ends_calls_left_answered(tmp_path: Path) -> None:
    """Calls answered before a restart (or by any worker) whose token expired are ended at start-up."""

    async def left_answered() -> None:
        store = Store(f"sqlite:///{tmp_path / 'hotline.db'}")
        await store.init()
        await store.create_call(
            id=cid(1), bot="support_desk", status="answered", started_at=time.time() - 7200
        )
        await store.close()

    asyncio.run(left_answered())
    with running_service(tmp_path) as service, service.client() as http:
        deadline = time.monotonic() + 20
        while (record := http.get(f"/api/calls/{cid(1)}").json())["status"] == "answered":
            assert time.monotonic() < deadline, "the start-up sweep did not end the call"
            time.sleep(0.1)
        metrics = http.get("/metrics").text
    assert record["status"] == "abandoned" and record["end_reason"] == STREAM_NEVER_CONNECTED
    assert 'hotline_calls_total{bot="support_desk",outcome="abandoned"} 1.0' in metrics
