"""A call's incoming stream against its own clock: a flooding call is paced and cannot starve a normal
one, a stream without frames is closed, a line that stops mid-turn counts as silence, and a caller's
last words survive the hang-up.

The intake clock is tested at CPU speed; the rest through the real service (stand-in speech models,
so model time is short and steady) with the PIOPIY simulator.
"""

from __future__ import annotations

import asyncio
import math
import statistics
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agent.telephony.intake import StreamIntake
from pipelines.voicing import trim_to_speech
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator, SimulatedCall
from testkit.standins import StandInModels, voice_print
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import events_of, eventually
from tests.agent.test_calls import call_id_of, final_record

RATE = 8000
QUESTION = "What are your opening hours?"
ANSWER = "Our branches are open from nine"
IDLE_TIMEOUT_S = 2.0


# ------------------------------------------------------------------------------ the intake clock


def test_audio_within_the_lead_is_taken_at_once_and_beyond_it_waits_for_the_clock() -> None:
    intake = StreamIntake(RATE, opened_at=100.0, max_lead_s=2.0)
    assert intake.hold_s(RATE, 100.0) == 0.0  # a second of audio at once: a burst, fine
    intake.audio(RATE, 100.0)
    assert intake.hold_s(RATE, 100.0) == 0.0  # two seconds ahead: still within the lead
    intake.audio(RATE, 100.0)
    assert intake.hold_s(160, 100.0) == pytest.approx(0.02)  # one more 20 ms frame must wait 20 ms
    assert intake.hold_s(160, 100.02) == pytest.approx(0.0)
    assert intake.lead_s(101.0) == pytest.approx(1.0)
    assert StreamIntake(RATE, opened_at=0.0, max_lead_s=None).hold_s(RATE * 60, 0.0) == 0.0


def test_a_network_stall_and_its_catch_up_are_never_held() -> None:
    """Frames late by a second, then all at once: behind the clock, then level with it, never ahead."""
    intake = StreamIntake(RATE, opened_at=0.0, max_lead_s=2.0)
    for i in range(50):
        intake.audio(160, 0.02 * i + 0.02)
    now = 2.0  # a one-second stall
    for _ in range(50):
        assert intake.hold_s(160, now) == 0.0
        intake.audio(160, now)
    assert intake.lead_s(now) == pytest.approx(0.0)


def test_missing_audio_counts_from_where_the_audio_ends_not_from_the_last_frame() -> None:
    intake = StreamIntake(RATE, opened_at=0.0)
    intake.audio(RATE, 0.5)  # a second of audio that arrived at 0.5 s runs until 1.0 s
    assert intake.missing_s(0.9) == 0.0
    assert intake.missing_s(1.7) == pytest.approx(0.7)
    assert intake.count_silence(1.7) == pytest.approx(0.7)
    assert intake.missing_s(1.7) == 0.0 and intake.missing_s(2.0) == pytest.approx(0.3)  # counted once
    assert intake.idle_s(2.0) == pytest.approx(1.5)  # idle counts frames, not audio


def test_the_next_check_is_the_idle_timeout_or_the_silence_of_an_open_turn() -> None:
    intake = StreamIntake(RATE, opened_at=0.0)
    intake.audio(160, 10.0)
    assert intake.next_check_s(10.0, idle_timeout_s=30.0, silence_s=None) == pytest.approx(30.0)
    assert intake.next_check_s(10.0, idle_timeout_s=30.0, silence_s=0.6) == pytest.approx(0.6)
    intake.frame(20.0)  # a text frame keeps the stream alive, but carries no audio: the turn's silence is due
    assert intake.next_check_s(20.0, idle_timeout_s=30.0, silence_s=0.6) == 0.0
    assert intake.missing_s(20.0) == pytest.approx(10.0)
    assert intake.next_check_s(20.0, idle_timeout_s=30.0, silence_s=None) == pytest.approx(30.0)


# -------------------------------------------------------------------------------- through the service


def question() -> bytes:
    """The caller's question cut to its words: nothing after the last syllable (no pause to end on)."""
    return trim_to_speech(caller_says(QUESTION, RATE), RATE, margin_ms=0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The real service with stand-in models that know the question, a one-word greeting, and a short
    idle timeout."""
    # A transcription holds a pool worker 0.3 s, about what Whisper tiny takes for a question here.
    models = StandInModels({QUESTION: voice_print(question(), RATE)}, asr_cost_s=0.3)
    bots = {"support_desk": {"greeting": "Hi."}}
    security = {"stream_idle_timeout_s": IDLE_TIMEOUT_S}
    with running_service(
        tmp_path_factory.mktemp("intake"), bots=bots, models=models, security=security
    ) as service:
        yield service


def sim(service: Service, **options: Any) -> PiopiySimulator:
    return PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET, **options)


async def greeted(service: Service, **options: Any) -> SimulatedCall:
    call = await sim(service, **options).place_call(to_number=SUPPORT_NUMBER)
    await call.wait_for_bot_audio(timeout=15)
    await call.wait_until_bot_silent(quiet_s=0.6, timeout=15)
    return call


async def ask_and_hear(call: SimulatedCall, times: int) -> None:
    """Ask the question `times`, hearing each answer out."""
    for _ in range(times):
        await call.say_pcm(question(), RATE)
        await call.silence(0.2)
        await call.wait_for_bot_audio(timeout=20, since=call.now())
        await call.wait_until_bot_silent(quiet_s=0.6, timeout=30)


async def normal_call(service: Service) -> list[int]:
    """A caller asking three times at real pace; the service's response times (ms) of its answers."""
    call = await greeted(service)
    async with call:
        await ask_and_hear(call, 3)
    record = await final_record(service, call_id_of(call.pcmo))
    caller = [t for t in record["turns"] if t["role"] == "caller"]
    assert [t["text"] for t in caller] == [QUESTION] * 3, record["turns"]
    assert sum(1 for t in record["turns"] if t["role"] == "bot" and ANSWER in t["text"]) == 3
    return [int(t["latency_ms"]["response_ms"]) for t in caller]


async def stream_errors(service: Service, kind: str) -> float:
    """`hotline_errors_total{stage="stream", kind=...}` over all bots."""
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http:
        text = (await http.get("/metrics")).text
    wanted = ('stage="stream"', f'kind="{kind}"')
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("hotline_errors_total{") and all(w in line for w in wanted)
    )


def flood_audio(seconds: float) -> bytes:
    """Talk, short pauses (speculative ASR) and turn ends, over and over."""
    words = caller_says(QUESTION, RATE)
    one = words + bytes(2 * RATE * 3 // 10) + words + bytes(2 * RATE)
    return one * math.ceil(seconds * RATE * 2 / len(one))


async def test_a_flooding_call_is_paced_and_a_normal_call_beside_it_keeps_its_latency(
    service: Service,
) -> None:
    """One caller streams talk flat out (far faster than real time) while another asks questions at
    the normal pace. The flood is read no faster than real time (a `stream/paced` event, counted in
    /metrics), and the normal caller's answers come within 1.5x of their time alone, measured here
    before and after the flood (the slower of the two: the machine is shared)."""
    solo = await normal_call(service)
    paced_before = await stream_errors(service, "audio_ahead")

    flooder = await greeted(service, speed=math.inf, max_lead_s=None)  # no limit: a flooding peer
    flood = asyncio.create_task(flooder.say_pcm(flood_audio(600), RATE))
    flood_id = call_id_of(flooder.pcmo)
    try:
        await eventually(lambda: flooder.frames_sent > 50 * 30, "the flood is on (30 s of audio sent)")
        beside = await normal_call(service)
    finally:
        flood.cancel()
        await asyncio.gather(flood, return_exceptions=True)
        await flooder.hangup()

    after = await normal_call(service)
    print(f"response ms alone {solo} and {after}, beside the flood {beside}")
    alone_ms = max(statistics.median(solo), statistics.median(after))
    assert statistics.median(beside) <= 1.5 * alone_ms, (solo, after, beside)
    record = await final_record(service, flood_id, timeout=30)
    (paced,) = events_of(record, "stream", "paced")
    assert paced["max_lead_s"] == 2.0 and paced["hold_s"] > 0
    assert paced["lead_s"] >= paced["max_lead_s"]  # over it by hold_s, which may round away at 3 decimals
    assert await stream_errors(service, "audio_ahead") == paced_before + 1


async def test_a_stream_that_sends_nothing_is_closed_after_the_idle_timeout(service: Service) -> None:
    call = await sim(service).place_call(to_number=SUPPORT_NUMBER)
    call.paused = True  # the line is up but the platform sends no frame
    try:
        code = await call.wait_closed(timeout=IDLE_TIMEOUT_S + 15)
    finally:
        await call.hangup()
    assert code == 1000
    record = await final_record(service, call_id_of(call.pcmo))
    assert record["end_reason"] == "idle_timeout" and record["status"] == "dropped"
    (idle,) = events_of(record, "stream", "idle_timeout")
    assert idle["limit_s"] == IDLE_TIMEOUT_S and idle["idle_s"] >= IDLE_TIMEOUT_S


async def test_frames_that_stop_mid_turn_count_as_silence_and_the_bot_answers(service: Service) -> None:
    """The caller's last syllable, then no more frames (silence suppression, a stalled carrier): the
    turn ends once end_silence_ms has passed without audio, and the bot answers."""
    async with await greeted(service) as call:
        await call.say_pcm(question(), RATE)
        call.paused = True  # not one frame more, not even silence
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await call.wait_until_bot_silent(quiet_s=0.6, timeout=30)
    record = await final_record(service, call_id_of(call.pcmo))
    assert [t["text"] for t in record["turns"] if t["role"] == "caller"] == [QUESTION]
    assert ANSWER in record["turns"][-1]["text"]
    (no_audio,) = events_of(record, "stream", "no_audio")
    assert no_audio["ms"] >= 600 and no_audio["counted_as"] == "silence"


async def test_a_caller_who_hangs_up_right_after_speaking_is_heard(service: Service) -> None:
    async with await greeted(service) as call:
        await call.say_pcm(question(), RATE)
        await call.silence(0.1)
    record = await final_record(service, call_id_of(call.pcmo))
    assert [t["text"] for t in record["turns"] if t["role"] == "caller"] == [QUESTION]
    assert events_of(record, "turns", "unanswered")[0]["text"] == QUESTION
