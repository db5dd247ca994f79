"""Whole calls through the PIOPIY simulator against the real service: greeting, recording, bad input."""

from __future__ import annotations

import asyncio
import io
import json
import math
import time
import uuid
import wave
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect

from testkit.simulator import PiopiySimulator
from tests.agent.conftest import ORDER_NUMBER, SUPPORT_NUMBER, WEBHOOK_SECRET, Service

GREETING = "Thank you for calling Acme Bank. I'm the virtual assistant. How can I help you today?"


def tone(seconds: float, rate: int, freq: float = 440.0, dbfs: float = -12.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * freq * t) * 32767 * 10 ** (dbfs / 20)).astype("<i2").tobytes()


async def final_record(service: Service, call_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The call's record once the service has closed it."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        while True:
            record: dict[str, Any] = (await http.get(f"/api/calls/{call_id}")).json()
            if record.get("ended_at") and not record.get("live"):
                return record
            assert time.monotonic() < deadline, f"call {call_id} not closed: {record}"
            await asyncio.sleep(0.05)


async def wait_for_bot_line(service: Service, call_id: str, ending: str, timeout: float = 30.0) -> None:
    """Until the live call's record holds a finished bot turn ending with `ending`: what a caller hears
    after a filler and a slow tool, however long a busy machine takes to say it (silence between the
    filler and the answer is no sign the answer is over)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        while True:
            record: dict[str, Any] = (await http.get(f"/api/calls/{call_id}")).json()
            turns = [t for t in record.get("turns", []) if t["role"] == "bot" and t.get("ended_at")]
            if any(t["text"].endswith(ending) for t in turns):
                return
            assert time.monotonic() < deadline, f"no bot line ending {ending!r}: {turns}"
            await asyncio.sleep(0.1)


def call_id_of(pcmo: list[dict[str, Any]]) -> str:
    stream = next(a for a in pcmo if a["action"] == "stream")
    return str(httpx.URL(stream["ws_url"]).params["call"])


def sim(service: Service, speed: float = 1.0) -> PiopiySimulator:
    return PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET, speed=speed)


@pytest.mark.parametrize(("number", "rate"), [(SUPPORT_NUMBER, 8000), (ORDER_NUMBER, 16000)])
async def test_greeting_comes_back_paced_at_the_call_rate(service: Service, number: str, rate: int) -> None:
    async with await sim(service).place_call(to_number=number) as call:
        await call.wait_for_bot_audio(timeout=5)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        chunks = [(t, a) for t, a in call.received_audio]
        call_id = call_id_of(call.pcmo)
    assert chunks and all(a.sample_rate == rate and a.audio_type == "raw" for _, a in chunks)
    durations = [len(a.audio) / 2 / rate for _, a in chunks]
    assert all(0.3 <= d <= 1.5 for d in durations[:-1])  # phrase-sized chunks, not 20 ms slivers
    assert 2.0 < sum(durations) < 12.0
    # Paced: at each arrival, what was already sent runs at most ~one chunk ahead of real time.
    t0 = chunks[0][0]
    for i, (t, _) in enumerate(chunks):
        queued_ahead = sum(durations[:i]) - (t - t0)
        assert queued_ahead <= max(durations) + 0.25, f"chunk {i} arrived {queued_ahead:.2f}s ahead"

    record = await final_record(service, call_id)
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert record["sample_rate"] == rate and record["connected_at"]
    (turn,) = record["turns"]
    assert turn["role"] == "bot" and not turn["interrupted"]
    if number == SUPPORT_NUMBER:
        assert turn["text"] == GREETING
    statuses = [(e["source"], e["status"].lower()) for e in record["events"]]
    for expected in [("piopiy", "in_answered"), ("stream", "connected"), ("piopiy", "stream_connected")]:
        assert expected in statuses
    assert ("stream", "closed") in statuses


async def test_caller_audio_and_bot_audio_are_recorded_time_aligned(service: Service) -> None:
    async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        await call.silence(0.5)
        await call.say_pcm(tone(1.0, 16000), 16000)  # resampled to the 8 kHz call by the simulator
        await call.silence(0.5)
        call_id = call_id_of(call.pcmo)
    record = await final_record(service, call_id)
    assert record["recording"] == {"url": f"/api/calls/{call_id}/recording", "channels": ["caller", "bot"]}
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        response = await http.get(record["recording"]["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    caller, bot = frames[:, 0].astype(float), frames[:, 1].astype(float)
    loud_caller = np.flatnonzero(np.abs(caller) > 1000)
    loud_bot = np.flatnonzero(np.abs(bot) > 1000)
    assert len(loud_caller) > 0.8 * 8000 * 0.5  # the 1 s tone (a sine is above 1000 most of the time)
    assert loud_bot.size and loud_bot[0] < loud_caller[0]  # the greeting came first...
    assert loud_caller[0] > loud_bot[-1]  # ...and the caller spoke after it ended, on the same clock
    assert abs(np.max(np.abs(caller)) - 32767 * 10 ** (-12 / 20)) < 1500


async def test_bad_token_is_refused_with_1008_and_opens_no_call(service: Service) -> None:
    pcmo = await sim(service).answer(to_number=SUPPORT_NUMBER)
    ws_url = next(a for a in pcmo if a["action"] == "stream")["ws_url"]
    call_id = call_id_of(pcmo)
    for bad in (
        ws_url.replace("token=", "token=x"),
        ws_url.split("&token=")[0],
        ws_url.replace("bot=support_desk", "bot=order_line"),
    ):
        async with connect(bad) as ws:
            await ws.wait_closed()
            assert ws.close_code == 1008
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        record = (await http.get(f"/api/calls/{call_id}")).json()
    assert record["status"] == "answered" and record["turns"] == [] and not record["live"]


async def test_a_used_token_cannot_open_a_second_stream(service: Service) -> None:
    async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
        async with connect(call.ws_url) as second:
            await second.wait_closed()
            assert second.close_code == 1008
        await call.wait_for_bot_audio(timeout=5)


async def test_odd_frames_and_text_junk_do_not_break_the_call(service: Service) -> None:
    async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        await call.send_text(call.cmiuuid)  # a bare call UUID first, like mod_audio_stream
        await call.send_text(json.dumps({"event": "start", "sampleRate": 8000}))
        await call.send_text("\u0000junk\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
        for size in (1, 3, 161, 319, 641, 2, 0):
            await call.send_bytes(b"\x01" * size)
        await call.wait_for_bot_audio(timeout=5)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
    record = await final_record(service, call_id)
    assert record["status"] == "completed" and len(record["turns"]) == 1
    statuses = [e["status"] for e in record["events"] if e["source"] == "stream"]
    assert statuses.count("metadata") == 2 and statuses.count("junk_text") == 1
    meta = [e["payload"] for e in record["events"] if e["status"] == "metadata"]
    assert meta[0]["call_uuid"] == call.cmiuuid and meta[1]["data"] == {"event": "start", "sampleRate": 8000}


async def test_a_5mb_frame_closes_with_1009_and_the_record_is_kept(service: Service) -> None:
    async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        await call.wait_for_bot_audio(timeout=5)
        await call.send_bytes(b"\x00" * (5 * 1024 * 1024))
        for _ in range(100):
            if call.close_code is not None:
                break
            await asyncio.sleep(0.05)
        assert call.close_code == 1009
    record = await final_record(service, call_id)
    assert record["end_reason"] == "frame_too_large" and record["turns"][0]["role"] == "bot"
    assert any(e["status"] == "frame_too_large" for e in record["events"])
    assert record["recording"] is not None


async def test_a_dropped_socket_still_leaves_a_complete_record(service: Service) -> None:
    call = await sim(service).place_call(to_number=SUPPORT_NUMBER)
    call_id = call_id_of(call.pcmo)
    await call.wait_for_bot_audio(timeout=5)
    await call.say_pcm(tone(0.4, 8000), 8000)
    await call.drop()
    record = await final_record(service, call_id)
    assert record["status"] == "dropped" and record["end_reason"].startswith("socket_closed")
    turn, *after = record["turns"]
    assert turn["ended_at"] and turn["text"] == GREETING
    # The tone cut the greeting (a barge-in); whatever ASR made of it was kept, and never answered.
    assert all(t["role"] == "caller" for t in after)
    unanswered = [e for e in record["events"] if (e["source"], e["status"]) == ("turns", "unanswered")]
    assert len(unanswered) == len(after)
    assert record["recording"] is not None


async def test_dtmf_reaches_the_live_call(service: Service) -> None:
    async with await sim(service).place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = call_id_of(call.pcmo)
        await call.wait_for_bot_audio(timeout=5)
        response = await call.dtmf("42#", "/piopiy/dtmf")
        assert response.json() == {"ok": True, "delivered": True}
    record = await final_record(service, call_id)
    assert {"dtmf": "42#"} in [e["payload"] for e in record["events"] if e["source"] == "dtmf"]


async def test_two_calls_at_once_are_independent(service: Service) -> None:
    async def one(number: str) -> str:
        async with await sim(service, speed=1.0).place_call(
            to_number=number, cmiuuid=str(uuid.uuid4())
        ) as call:
            await call.wait_for_bot_audio(timeout=5)
            return call_id_of(call.pcmo)

    a, b = await asyncio.gather(one(SUPPORT_NUMBER), one(ORDER_NUMBER))
    ra, rb = await final_record(service, a), await final_record(service, b)
    assert (ra["bot"], rb["bot"]) == ("support_desk", "order_line")
