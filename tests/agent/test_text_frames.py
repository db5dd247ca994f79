"""Stream text frames in the record: bounded in count and size, what was left out counted, and reading a
record after a flood of them does not hold up the service's event loop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest

from agent.call.text_frames import TextFrameBudget
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import eventually, runtime_of
from tests.agent.test_calls import call_id_of

FLOOD = 600
BIG = 200_000
"""600 JSON frames of 200 KB: the flood that once added 119 MB to one record."""


def test_the_first_frames_are_kept_whole_then_as_stubs_then_only_counted() -> None:
    budget = TextFrameBudget(max_frames=3, max_bytes=100)
    assert [budget.admit(n) for n in (40, 50, 30, 10, 5)] == ["whole", "whole", "stub", "drop", "drop"]
    assert budget.summary() == {
        "frames": 5, "frames_kept": 2, "frames_stubbed": 1, "frames_dropped": 2,
        "bytes": 135, "bytes_kept": 90, "bytes_dropped": 45, "max_frames": 3, "max_bytes": 100,
    }  # fmt: skip
    everything = TextFrameBudget(max_frames=3, max_bytes=100)
    assert [everything.admit(n) for n in (10, 20)] == ["whole", "whole"] and everything.summary() is None
    nothing = TextFrameBudget(max_frames=0, max_bytes=0)
    assert nothing.admit(1) == "drop" and nothing.summary() is not None


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("text-frames")) as service:
        yield service


async def test_a_flood_of_metadata_frames_keeps_the_record_small_and_the_loop_free(service: Service) -> None:
    """600 JSON text frames of 200 KB on one call: the record keeps the first 20 (the small first one
    whole, the rest as stubs with their size) and a `stream/text_truncated` event with what was dropped;
    it stays small, and fetching it does not stall the event loop (measured by its lag monitor)."""
    runtime = runtime_of(service)
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET, post_events=False, speed=float("inf"))
    cmiuuid = "0b7e3c1c-5f2a-4c8e-9d41-0a1b2c3d4e5f"
    async with await sim.place_call(to_number=SUPPORT_NUMBER, cmiuuid=cmiuuid) as call:
        call_id = call_id_of(call.pcmo)
        first = json.dumps({"cmiuuid": cmiuuid, "codec": "L16"})
        await call.send_text(first)
        big = json.dumps({"cmiuuid": cmiuuid, "blob": "x" * BIG})
        for _ in range(FLOOD - 1):
            await call.send_text(big)
        await call.wait_for_bot_audio(timeout=30)  # everything sent has been read
    await eventually(lambda: call_id not in runtime.calls.sessions, "the call closed", timeout=60)
    await eventually(lambda: runtime.writer.pending == 0, "the record written", timeout=60)

    runtime.loop_lag.reset()
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=60) as http:
        started = time.monotonic()
        response = await http.get(f"/api/calls/{call_id}")
        fetch_s = time.monotonic() - started
    await asyncio.sleep(0.3)  # the lag monitor's next samples see any stall the fetch caused
    lag_ms = runtime.loop_lag.max_ms

    assert response.status_code == 200
    assert lag_ms < 300, f"the event loop stalled {lag_ms:.0f} ms while the record was read ({fetch_s:.2f} s)"
    assert len(response.content) < 200_000, f"{len(response.content)} bytes"
    record = response.json()
    assert record["cmiuuid"] == cmiuuid
    metadata = [e["payload"] for e in record["events"] if e["status"] == "metadata"]
    assert metadata[0] == {"call_uuid": cmiuuid, "data": {"cmiuuid": cmiuuid, "codec": "L16"}}
    assert len(metadata) == 20 and all(m["truncated"] and m["bytes"] == len(big) for m in metadata[1:])
    (truncated,) = [e["payload"] for e in record["events"] if e["status"] == "text_truncated"]
    assert truncated["frames"] == FLOOD and truncated["frames_dropped"] == FLOOD - 20
    assert truncated["frames_kept"] == 1 and truncated["frames_stubbed"] == 19
    assert truncated["bytes_kept"] == len(first)
    assert truncated["bytes_dropped"] == (FLOOD - 1) * len(big)
