"""A recorded call replayed through the simulator: the same words get the same spoken answers, and the
new call's record has each turn's latencies (the regression-test use of call recordings)."""

from __future__ import annotations

from pathlib import Path

import httpx

from testkit.caller_voice import caller_says
from testkit.replay import caller_channel, compare, replay
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service
from tests.agent.test_calls import call_id_of, final_record


async def test_a_recorded_call_replays_with_the_same_answers_and_its_latencies(
    service: Service, tmp_path: Path
) -> None:
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        for line in ("What are your opening hours?", "Are you open on Saturday?"):
            await call.say_pcm(caller_says(line), 8000)
            await call.wait_for_bot_audio(timeout=15, since=call.now())
            await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        original_id = call_id_of(call.pcmo)
    original = await final_record(service, original_id)
    # The recording as an operator gets it: over the API.
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        response = await http.get(f"/api/calls/{original_id}/recording")
    assert response.status_code == 200
    wav = tmp_path / "original.wav"
    wav.write_bytes(response.content)
    pcm, rate = caller_channel(wav)
    assert rate == 8000 and len(pcm) > 2 * rate * 5

    replayed = await replay(sim, wav, to_number=SUPPORT_NUMBER)
    again = await final_record(service, replayed.call_id)
    diff = compare(original, again)
    assert diff["caller_wer"] <= 0.1, diff
    assert diff["bot_lines"]["replayed"] == diff["bot_lines"]["original"] == 3
    assert diff["bot_lines_same"] == 3
    callers = [t for t in again["turns"] if t["role"] == "caller"]
    assert len(callers) == 2
    for turn in callers:
        latency = turn["latency_ms"]
        assert {"endpoint_ms", "asr_ms", "asr_wait_ms", "response_ms"} <= set(latency)
        assert 0 < latency["response_ms"] < 3000
