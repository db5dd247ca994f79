"""Live events: a viewer sees a call's transcript form, turn by turn, as it happens."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect

from agent.worker.bus import Bus
from testkit.caller_voice import caller_says
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service
from tests.agent.test_conversation import sim


async def test_a_viewer_sees_partial_and_final_transcripts_live(service: Service) -> None:
    live_url = service.url.replace("http", "ws", 1) + "/api/live"
    seen: list[dict[str, Any]] = []
    async with connect(live_url, additional_headers=service.api_headers) as viewer:

        async def watch() -> None:
            async for message in viewer:
                seen.append(json.loads(message))

        watcher = asyncio.create_task(watch())
        async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            await call.say_pcm(caller_says("What are your opening hours?"), 8000)
            await call.wait_for_bot_audio(timeout=10, since=call.now())
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        await asyncio.sleep(0.3)
        watcher.cancel()
    kinds = [e["kind"] for e in seen]
    assert kinds[0] == "call.started" and kinds[-1] == "call.ended"
    assert {"speech.started", "transcript.partial", "turn"} <= set(kinds)
    caller_turns = [e["data"]["text"] for e in seen if e["kind"] == "turn" and e["data"]["role"] == "caller"]
    assert len(caller_turns) == 1 and "opening hours" in caller_turns[0].lower()
    partial = next(e for e in seen if e["kind"] == "transcript.partial")
    assert kinds.index("transcript.partial") < kinds.index("turn", kinds.index("speech.started"))
    assert partial["data"]["text"]
    assert len({e["call_id"] for e in seen}) == 1


async def test_live_needs_an_api_key_and_the_webhook_secret_is_none(service: Service) -> None:
    live = service.url.replace("http", "ws", 1) + "/api/live"
    for url, headers in (
        (live, {"Authorization": "Bearer wrong-key-0123456789abcdefghij"}),
        (live + f"?secret={WEBHOOK_SECRET}", {}),
        (live, service.webhook_headers),
        (live, {"Authorization": f"Bearer {WEBHOOK_SECRET}"}),
    ):
        async with connect(url, additional_headers=headers) as viewer:
            await viewer.wait_closed()
            assert (viewer.close_code, viewer.close_reason) == (1008, "unauthorized"), (url, headers)


async def test_a_slow_viewer_loses_old_events_not_the_call() -> None:
    bus = Bus(queue_size=3)
    sub = bus.subscribe("c_1")
    for i in range(5):
        bus.publish("c_1", "tick", {"i": i})
    bus.publish("c_2", "tick", {"i": 99})  # another call: not for this subscriber
    assert [sub.queue.get_nowait().data["i"] for _ in range(3)] == [2, 3, 4] and sub.dropped == 2
    sub.close()
    bus.publish("c_1", "tick", {"i": 5})
    assert sub.queue.empty()
