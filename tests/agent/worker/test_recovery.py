"""Recovery of calls a dead worker left active, at CPU speed: a store, raw parts on disk, no service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from agent.records.store import Store
from agent.worker import recovery
from agent.worker.recovery import Incarnation, recover_abandoned_calls, recovery_loop
from agent.worker.runtime import new_call_id

CRASHED, ELSEWHERE, LIVE = (
    new_call_id(),
    new_call_id(),
    new_call_id(),
)  # ids as we mint them: nothing else is recovered


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    return sqlite_store


async def _left_active(store: Store, rec: Path, call_id: str, served_by: dict[str, Any]) -> None:
    """A call its worker left `active`, with a second of caller audio in raw parts written just now."""
    now = time.time()
    await store.create_call(
        id=call_id, status="active", started_at=now - 5, connected_at=now - 5, sample_rate=8000,
        meta={"served_by": served_by},
    )  # fmt: skip
    parts = rec / call_id
    parts.mkdir(parents=True)
    (parts / "caller.raw").write_bytes(b"\x01\x00" * 8000)
    (parts / "bot.raw").write_bytes(b"")


async def _dead_pid() -> int:
    process = await asyncio.create_subprocess_exec("true")
    await process.wait()
    return process.pid


async def test_a_worker_restarted_seconds_after_a_crash_recovers_its_call_at_once(
    store: Store, tmp_path: Path
) -> None:
    """The raw parts are fresh (the crash was a moment ago), but the process that wrote them is provably
    dead on this host: the call is finished in the first pass, not left `active` until the next start."""
    me = Incarnation("worker-a")
    dead = {**Incarnation("worker-a").as_meta(), "pid": await _dead_pid()}
    await _left_active(store, tmp_path / "rec", CRASHED, dead)
    done = await recover_abandoned_calls(store, tmp_path / "rec", me, None, alone=True)
    assert done.finished == [CRASHED] and done.waiting == []
    record = await store.call_record(CRASHED)
    assert record is not None and record["status"] == "incomplete" and record["recording"] is not None


async def test_fresh_parts_of_a_worker_on_another_host_are_looked_at_again_once_quiet(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Alone by configuration, another host's call is gone, but audio written moments ago may still be
    arriving: it waits, and the loop (which used to look only once without a cluster) comes back."""
    monkeypatch.setattr(recovery, "FRESH_PARTS_S", 0.5)
    me = Incarnation("worker-a")
    elsewhere = {**Incarnation("worker-b").as_meta(), "host": "another-host"}
    await _left_active(store, tmp_path / "rec", ELSEWHERE, elsewhere)
    first = await recover_abandoned_calls(store, tmp_path / "rec", me, None, alone=True)
    assert first.finished == [] and first.waiting == [ELSEWHERE]
    loop = asyncio.create_task(recovery_loop(store, tmp_path / "rec", me, None, alone=True))
    await asyncio.wait_for(loop, timeout=30)  # returns once nothing waits any more
    record = await store.call_record(ELSEWHERE)
    assert record is not None and record["status"] == "incomplete"


async def test_a_live_process_on_this_host_keeps_its_call(store: Store, tmp_path: Path) -> None:
    me = Incarnation("worker-a")
    sleeper = await asyncio.create_subprocess_exec("sleep", "30")
    try:
        alive = {**Incarnation("worker-a").as_meta(), "pid": sleeper.pid}
        await _left_active(store, tmp_path / "rec", LIVE, alive)
        done = await recover_abandoned_calls(store, tmp_path / "rec", me, None, alone=True)
        assert done.finished == [] and done.waiting == []
    finally:
        sleeper.kill()
        await sleeper.wait()
