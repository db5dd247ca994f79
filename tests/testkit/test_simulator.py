"""The PIOPIY simulator against a small bot server that speaks the protocol (not the Hotline service)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import wave
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from agent.telephony.piopiy.codec import (
    PcmoFrame,
    StreamControl,
    bridge_action,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
    stream_action,
)
from agent.telephony.piopiy.webhooks import (
    CallEvent,
    CdrRecord,
    parse_body,
)
from testkit.servers import serve_in_thread
from testkit.simulator import CallEnded, PiopiySimulator, SimulatorError, SimulatorTimeout

SECRET = "hook-secret"
TO = "918012345678"
Script = Callable[[WebSocket, "FakeBot"], Awaitable[None]]


def tone(seconds: float, rate: int, freq: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def samples(pcm: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.frombuffer(pcm, dtype="<i2")


def voiced_span(pcm: bytes, level: int = 200) -> tuple[int, int]:
    """First and last sample index louder than `level`."""
    loud = np.flatnonzero(np.abs(samples(pcm).astype(np.int32)) > level)
    return int(loud[0]), int(loud[-1])


async def listen_only(ws: WebSocket, bot: FakeBot) -> None:
    return None


class FakeBot:
    """Imitates a PIOPIY-speaking bot server: records what the platform sends, runs a script on the socket."""

    def __init__(self) -> None:
        self.base_url = ""
        self.app = FastAPI()
        self.reset()
        app = self.app

        @app.post("/piopiy/answer")
        async def answer(request: Request) -> Any:
            self._record(request, await request.json())
            if self.answer_override is not None:
                status, content = self.answer_override
                return JSONResponse(content, status_code=status)
            ws_url = str(request.base_url).replace("http://", "ws://") + f"stream?token={self.token}"
            return [stream_action(ws_url, voice_quality=self.rate)]

        @app.post("/piopiy/events")
        @app.post("/piopiy/cdr")
        @app.post("/piopiy/dtmf")
        async def webhook(request: Request) -> dict[str, bool]:
            self._record(request, await request.json())
            return {"ok": True}

        @app.websocket("/stream")
        async def stream(ws: WebSocket) -> None:
            token = ws.query_params.get("token")
            if token == "reject":
                await ws.close(code=1008)  # before accept: the handshake fails with HTTP 403
                return
            await ws.accept()
            if token != "good":
                await ws.close(code=1008, reason="bad token")
                return
            receiver = asyncio.create_task(self._receive(ws))
            await self.script(ws, self)
            await receiver

    def reset(self) -> None:
        self.rate = 8000
        self.token = "good"
        self.answer_override: tuple[int, Any] | None = None
        self.script: Script = listen_only
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.frames: list[tuple[float, bytes]] = []
        self.texts: list[str] = []
        self.disconnected: int | None = None

    def _record(self, request: Request, body: dict[str, Any]) -> None:
        self.posts.append((request.url.path, dict(request.headers), body))

    async def _receive(self, ws: WebSocket) -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                self.disconnected = message.get("code", 1005)
                return
            if message.get("bytes") is not None:
                self.frames.append((time.monotonic(), message["bytes"]))
            elif message.get("text") is not None:
                self.texts.append(message["text"])

    def received_audio(self) -> bytes:
        return b"".join(frame for _, frame in self.frames)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, _, body in self.posts if p == path]


@pytest.fixture(scope="module")
def _bot_server() -> Iterator[FakeBot]:
    bot = FakeBot()
    with serve_in_thread(bot.app) as url:
        bot.base_url = url
        yield bot


@pytest.fixture
def bot(_bot_server: FakeBot) -> FakeBot:
    _bot_server.reset()
    return _bot_server


def simulator(bot: FakeBot, speed: float = math.inf, **options: Any) -> PiopiySimulator:
    return PiopiySimulator(bot.base_url, webhook_secret=SECRET, speed=speed, **options)


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------------ caller


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_caller_wav_reaches_the_server_at_the_call_rate_in_20ms_frames(
    bot: FakeBot, rate: int, tmp_path: Path
) -> None:
    bot.rate = rate
    wav = tmp_path / "caller.wav"
    with wave.open(str(wav), "wb") as out:  # 22.05 kHz on purpose: the simulator resamples
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(22050)
        out.writeframes(tone(0.5, 22050))

    async with await simulator(bot).place_call(to_number=TO) as call:
        assert call.sample_rate == rate
        await call.say_wav(wav)
        await call.silence(0.1)
    await wait_until(lambda: bot.disconnected is not None)

    frame_bytes = rate * 20 // 1000 * 2
    assert {len(frame) for _, frame in bot.frames} == {frame_bytes}
    first, last = voiced_span(bot.received_audio())
    assert abs((last - first + 1) - 0.5 * rate) <= frame_bytes // 2
    assert bot.received_audio().startswith(call.caller_audio()[: len(bot.received_audio()) - frame_bytes])


async def test_speed_1_paces_in_real_time_and_inf_does_not(bot: FakeBot) -> None:
    async with await simulator(bot, speed=1.0).place_call(to_number=TO) as call:
        started = time.monotonic()
        await call.say_pcm(tone(1.0, 8000), 8000)
        elapsed = time.monotonic() - started
    assert 0.8 <= elapsed <= 1.2
    voiced = [t for t, frame in bot.frames if np.abs(samples(frame)).max() > 200]
    assert 0.8 <= voiced[-1] - voiced[0] <= 1.2  # as the server saw it

    async with await simulator(bot).place_call(to_number=TO) as call:
        started = time.monotonic()
        await call.say_pcm(tone(1.0, 8000), 8000)
        assert time.monotonic() - started < 0.3


async def test_flat_out_stays_within_its_lead_of_the_wall_clock_unless_unlimited(bot: FakeBot) -> None:
    """A service reads no further ahead than its allowed lead: the line keeps within `max_lead_s`."""
    dialled = time.monotonic()  # before the socket opened: what follows can only understate the lead
    async with await simulator(bot, max_lead_s=0.5).place_call(to_number=TO) as call:
        started = time.monotonic()
        await call.say_pcm(tone(2.0, 8000), 8000)
        elapsed = time.monotonic() - started
        assert call.now() - (time.monotonic() - dialled) <= 0.5 + 0.02  # within the limit (a frame's slack)
    assert 1.3 <= elapsed <= 2.5  # the first half second at once, the rest in real time

    async with await simulator(bot, max_lead_s=None).place_call(to_number=TO) as call:
        started = time.monotonic()
        await call.say_pcm(tone(2.0, 8000), 8000)
        assert time.monotonic() - started < 0.5  # a flooding caller


async def test_line_is_never_quiet_on_the_wire(bot: FakeBot) -> None:
    async with await simulator(bot, speed=1.0, line_noise_dbfs=-60).place_call(to_number=TO) as call:
        await asyncio.sleep(0.2)
    assert len(bot.frames) >= 5  # line silence flows with nobody speaking
    level = np.sqrt(np.mean(samples(bot.received_audio()).astype(np.float64) ** 2))
    assert 10 < level < 80  # -60 dBFS ≈ 33 LSB RMS
    assert call.frames_sent >= len(bot.frames)


async def test_cancelled_utterance_stops_mid_way(bot: FakeBot) -> None:
    async with await simulator(bot, speed=1.0).place_call(to_number=TO) as call:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(call.say_pcm(tone(2.0, 8000), 8000), 0.2)
        await call.silence(0.1)
    first, last = voiced_span(call.caller_audio())
    assert (last - first) / 8000 < 0.5


# --------------------------------------------------------------------------------------------- bot


async def test_break_cuts_playback_and_pcmo_frames_are_collected(bot: FakeBot) -> None:
    transfer = [bridge_action(918012345678, [919812345678])]

    async def script(ws: WebSocket, bot: FakeBot) -> None:
        await ws.send_text(encode_stream_audio(tone(2.0, 8000), 8000))
        await asyncio.sleep(0.3)
        await ws.send_text(encode_control("break"))
        await ws.send_text(encode_pcmo(transfer))
        await ws.send_text(encode_stream_audio(tone(0.2, 16000), 16000))  # resampled to the call rate

    bot.script = script
    async with await simulator(bot, speed=1.0).place_call(to_number=TO) as call:
        first = await call.wait_for_bot_audio(timeout=2)
        assert len(first.audio) == 2 * 16000
        await call.wait_for_control(lambda f: isinstance(f, PcmoFrame), timeout=2)
        await call.wait_until_bot_silent(quiet_s=0.15, timeout=3)

    played = len(call.bot_audio()) / 2 / 8000
    assert 0.35 <= played <= 0.9  # ~0.3 s of the first chunk + the 0.2 s one, far from 2.2 s
    assert call.discarded_bytes / 2 / 8000 >= 1.3
    assert [type(f) for _, f in call.controls] == [StreamControl, PcmoFrame]
    assert call.controls[0][1] == StreamControl("break")
    assert call.pcmo_frames[0][1].actions == transfer
    times = [t for t, _ in call.received_audio] + [t for t, _ in call.controls]
    assert times[0] <= call.controls[0][0] <= call.received_audio[1][0]
    assert call.errors == []


async def test_recording_has_caller_left_and_bot_right(bot: FakeBot, tmp_path: Path) -> None:
    async def greet(ws: WebSocket, bot: FakeBot) -> None:
        await ws.send_text(encode_stream_audio(tone(0.4, 8000, 1000, amp=12000), 8000))

    bot.script = greet
    async with await simulator(bot).place_call(to_number=TO) as call:
        await call.wait_for_bot_audio(timeout=2)
        await call.wait_until_bot_silent(quiet_s=0.1, timeout=2)
        await call.say_pcm(tone(0.3, 8000, amp=5000), 8000)
        await call.silence(0.1)
    path = call.write_recording(tmp_path / "rec" / "call.wav")

    with wave.open(str(path), "rb") as rec:
        assert (rec.getnchannels(), rec.getsampwidth(), rec.getframerate()) == (2, 2, 8000)
        stereo = samples(rec.readframes(rec.getnframes())).reshape(-1, 2)
    left, right = stereo[:, 0].tobytes(), stereo[:, 1].tobytes()
    bot_first, bot_last = voiced_span(right)
    caller_first, caller_last = voiced_span(left)
    assert abs((bot_last - bot_first + 1) - 0.4 * 8000) <= 160
    assert abs((caller_last - caller_first + 1) - 0.3 * 8000) <= 160
    assert bot_last < caller_first  # the caller answered after the greeting, on one clock
    assert np.abs(stereo[:, 1]).max() > 11000 and np.abs(stereo[:, 0]).max() < 5500
    assert len(left) == len(right) == len(call.caller_audio())
    assert len(call.bot_audio()) == 2 * 3200 and call.bot_audio() in right


async def test_junk_from_the_server_is_collected_not_fatal(bot: FakeBot) -> None:
    async def junk(ws: WebSocket, bot: FakeBot) -> None:
        await ws.send_text("not json")
        await ws.send_bytes(b"\x00\x01")
        await ws.send_text(json.dumps({"type": "somethingElse"}))
        await ws.send_text(encode_stream_audio(b"\x10\x00" * 400, 8000, "mp3"))
        await ws.send_text(encode_stream_audio(tone(0.1, 8000), 8000))

    bot.script = junk
    async with await simulator(bot).place_call(to_number=TO) as call:
        await call.send_text("hello")
        await call.send_bytes(b"\x01\x02\x03")
        await call.wait_until_bot_silent(quiet_s=0.05, timeout=2)
    assert len(call.errors) == 4
    assert "not JSON" in call.errors[0].reason and "binary" in call.errors[1].reason
    assert "mp3" in call.errors[3].reason
    assert len(call.bot_audio()) == 1600
    assert bot.texts == ["hello"] and b"\x01\x02\x03" in [f for _, f in bot.frames]


async def test_waits_time_out_clearly(bot: FakeBot) -> None:
    async with await simulator(bot).place_call(to_number=TO) as call:
        with pytest.raises(SimulatorTimeout, match="bot audio"):
            await call.wait_for_bot_audio(timeout=0.1)
        with pytest.raises(TimeoutError):
            await call.wait_for_control(lambda f: True, timeout=0.05)


# ---------------------------------------------------------------------------------- socket endings


async def test_server_closing_with_1008_is_reported(bot: FakeBot) -> None:
    bot.token = "bad"
    call = await simulator(bot).place_call(to_number=TO)
    assert await call.wait_closed(timeout=2) == 1008
    assert (call.close_reason, call.closed_by) == ("bad token", "server")
    with pytest.raises(CallEnded, match="1008"):
        await call.say_pcm(tone(0.1, 8000), 8000)
    with pytest.raises(CallEnded):
        await call.wait_for_bot_audio(timeout=1)
    await call.hangup()  # after the server closed: no error
    await call.hangup()
    statuses = [e["status"] for e in bot.bodies("/piopiy/events")]
    assert statuses == ["in_answered", "stream_connected", "STREAM_DISCONNECTED", "hangup"]
    disconnected = parse_body(CallEvent, bot.bodies("/piopiy/events")[2]).stream_status()
    assert disconnected == {"status": "disconnected", "message": {"code": 1008, "reason": "bad token"}}
    assert len(bot.bodies("/piopiy/cdr")) == 1


async def test_refused_handshake_is_a_clear_error(bot: FakeBot) -> None:
    bot.token = "reject"
    with pytest.raises(SimulatorError, match=r"refused the stream socket.*HTTP 403"):
        await simulator(bot).place_call(to_number=TO)


async def test_drop_loses_the_socket_without_a_close_handshake(bot: FakeBot) -> None:
    async with await simulator(bot).place_call(to_number=TO) as call:
        await call.silence(0.05)
        await call.drop()
        assert (call.close_code, call.closed_by) == (1006, "drop")
        await wait_until(lambda: bot.disconnected is not None)
    assert bot.disconnected != 1000
    statuses = [e["status"] for e in bot.bodies("/piopiy/events")]
    assert statuses[-2:] == ["STREAM_DISCONNECTED", "hangup"]


async def test_stop_control_ends_the_stream_not_the_call(bot: FakeBot) -> None:
    async def stop(ws: WebSocket, bot: FakeBot) -> None:
        await ws.send_text(encode_control("stop"))

    bot.script = stop
    async with await simulator(bot).place_call(to_number=TO) as call:
        assert await call.wait_closed(timeout=2) == 1000
        assert call.closed_by == "stop"
        assert bot.bodies("/piopiy/cdr") == []


# ----------------------------------------------------------------------------------------- webhooks


async def test_events_cdr_and_dtmf_are_posted_like_piopiy_with_the_secret(bot: FakeBot) -> None:
    async with await simulator(bot).place_call(from_number=919876543210, to_number=TO) as call:
        response = await call.dtmf("42#", "/piopiy/dtmf")
        assert response.status_code == 200

    assert all(headers.get("x-hotline-secret") == SECRET for _, headers, _ in bot.posts)
    answer = bot.bodies("/piopiy/answer")[0]
    assert answer["action"] == "inbound" and answer["cmiuuid"] == call.cmiuuid and answer["to"] == TO
    assert abs(answer["time"] / 1000 - time.time()) < 60
    events = bot.bodies("/piopiy/events")
    assert [e["status"] for e in events] == [
        "in_answered",
        "stream_connected",
        "STREAM_DISCONNECTED",
        "hangup",
    ]
    assert events[1]["ws_status"] == json.dumps({"status": "connected"})  # a JSON *string*
    for event in events:
        parsed = parse_body(CallEvent, event)
        assert (parsed.cmiuuid, parsed.leg, parsed.direction, parsed.from_) == (
            call.cmiuuid,
            "a",
            "inbound",
            "919876543210",
        )
    cdr = bot.bodies("/piopiy/cdr")[0]
    assert parse_body(CdrRecord, cdr).status == "answered"
    assert cdr["type"] == "cdr" and cdr["cmiuuid"] == call.cmiuuid and cdr["leg"] == "a"
    assert cdr["start_time"] <= cdr["answer_time"] <= cdr["end_time"] and isinstance(cdr["duration"], int)
    assert bot.bodies("/piopiy/dtmf") == [
        {"from": "919876543210", "to": TO, "dtmf": "42#", "cmiuuid": call.cmiuuid}
    ]
    assert [p.status for p in call.posts] == [200] * len(call.posts)


async def test_post_events_false_posts_only_answer_url(bot: FakeBot) -> None:
    async with await simulator(bot, post_events=False).place_call(to_number=TO):
        pass
    assert [path for path, _, _ in bot.posts] == ["/piopiy/answer"]


async def test_answer_url_problems_are_clear_errors(bot: FakeBot) -> None:
    sim = simulator(bot)
    bot.answer_override = (500, {"detail": "boom"})
    with pytest.raises(SimulatorError, match=r"HTTP 500.*boom"):
        await sim.place_call(to_number=TO)
    bot.answer_override = (200, {"action": "stream"})
    with pytest.raises(SimulatorError, match="not a PCMO"):
        await sim.place_call(to_number=TO)
    fallback = [{"action": "speak", "text": "Sorry, wrong number"}, {"action": "hangup"}]
    bot.answer_override = (200, fallback)
    with pytest.raises(SimulatorError, match="no stream action"):
        await sim.place_call(to_number=TO)
    assert await sim.answer(to_number="910000000000") == fallback
