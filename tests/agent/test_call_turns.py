"""A live CallSession driven in-process at CPU speed (stand-in models, no socket): the caller's last
words when the call ends, and a line that stops sending audio mid-turn."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.call.session import CallSession
from agent.config.settings import load_settings
from agent.telephony.piopiy.link import PiopiyLink
from agent.worker.logs import for_call
from agent.worker.runtime import Runtime, new_call_id
from agent.worker.speech_models import CallTranscriber
from pipelines.asr import Transcript
from testkit.caller_voice import caller_says
from testkit.standins import StandInModels, voice_print
from tests.agent.conftest import WEBHOOK_SECRET, write_config
from tests.agent.faults import eventually

RATE = 8000
BOT = "support_desk"
QUESTION = "What are your opening hours?"
ANSWER = "Our branches are open from nine"


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * RATE))


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """The service's per-process runtime with stand-in models, and support_desk greeting in a word."""
    os.environ["HOTLINE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    os.environ["HOTLINE_STREAM_SECRET"] = "test-stream-secret-0123456789abcdef"
    settings = load_settings(write_config(tmp_path))
    settings.bots[BOT] = settings.bots[BOT].model_copy(update={"greeting": "Hi."})
    models = StandInModels({QUESTION: voice_print(caller_says(QUESTION, RATE), RATE)})
    runtime = await Runtime.start(settings, models)
    yield runtime
    await runtime.stop()


class GatedTranscriber:
    """The bot's transcriber, holding every transcription until `open` is set."""

    def __init__(self, inner: CallTranscriber) -> None:
        self.inner = inner
        self.open = asyncio.Event()
        self.waiting = 0

    @property
    def sample_rate_in(self) -> int:
        return self.inner.sample_rate_in

    async def transcribe(self, pcm: bytes) -> Transcript:
        self.waiting += 1
        await self.open.wait()
        return await self.inner.transcribe(pcm)

    def for_language(self, language: str | None) -> CallTranscriber:
        return self


class Line:
    """What the session sent to the platform."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        frame = json.loads(text)
        if isinstance(frame, dict):
            self.frames.append(frame)

    @property
    def audio_chunks(self) -> int:
        return sum(1 for f in self.frames if f.get("type") == "streamAudio")


async def open_call(runtime: Runtime, line: Line) -> CallSession:
    """A call to support_desk that has heard its greeting and is listening."""
    call_id = new_call_id()
    for_call(call_id)
    bot = runtime.settings.bots[BOT]
    await runtime.store.insert_call(
        id=call_id, bot=BOT, status="answered", started_at=time.time(), sample_rate=RATE
    )
    link = PiopiyLink(line.send_text, RATE, call_id=call_id)
    session = CallSession(runtime, call_id=call_id, bot_name=BOT, bot=bot, link=link)
    runtime.calls.register(session)
    await session.start()
    session.on_audio(silence(0.2))
    await eventually(lambda: session.state == "listening" and line.audio_chunks > 0, "the greeting played")
    return session


async def record_of(runtime: Runtime, call_id: str) -> dict[str, Any]:
    await runtime.writer.flush(10)
    record = await runtime.store.call_record(call_id)
    assert record is not None
    return record


def caller_turns(record: dict[str, Any]) -> list[str]:
    return [t["text"] for t in record["turns"] if t["role"] == "caller"]


def events(record: dict[str, Any], source: str, status: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in record["events"] if (e["source"], e["status"]) == (source, status)]


async def test_words_said_just_before_the_hang_up_are_kept(runtime: Runtime) -> None:
    """The caller asks and hangs up 0.2 s later, long before the turn's silence runs out: the question
    is still transcribed and recorded (nobody is left to answer it)."""
    line = Line()
    session = await open_call(runtime, line)
    session.on_audio(caller_says(QUESTION, RATE) + silence(0.2))
    assert session.turns.in_turn  # the turn is still open when the stream ends
    chunks_before = line.audio_chunks
    await session.close("socket_closed_1000")

    record = await record_of(runtime, session.call_id)
    assert caller_turns(record) == [QUESTION]
    assert [t["role"] for t in record["turns"]] == ["bot", "caller"]  # no answer after it
    (unanswered,) = events(record, "turns", "unanswered")
    assert unanswered["text"] == QUESTION and unanswered["why"] == "call_ended"
    assert line.audio_chunks == chunks_before
    assert record["status"] == "completed"


async def test_a_turn_still_being_transcribed_at_the_hang_up_is_recorded(runtime: Runtime) -> None:
    """The turn ended and its ASR is still running (a busy model pool) when the caller hangs up: the
    transcription finishes and the turn is recorded, instead of being cancelled with the call."""
    gated = GatedTranscriber(runtime.transcribers[BOT])
    runtime.transcribers[BOT] = gated
    line = Line()
    session = await open_call(runtime, line)
    session.on_audio(caller_says(QUESTION, RATE) + silence(1.0))
    assert not session.turns.in_turn  # the turn ended: its transcript is awaited
    await eventually(lambda: gated.waiting > 0, "the transcription started")

    closing = asyncio.create_task(session.close("socket_closed_1000"))
    await asyncio.sleep(0.2)
    assert not closing.done()  # the end waits for the caller's last turn
    gated.open.set()
    await asyncio.wait_for(closing, 10)

    record = await record_of(runtime, session.call_id)
    assert caller_turns(record) == [QUESTION]
    assert [t["role"] for t in record["turns"]] == ["bot", "caller"]
    assert events(record, "turns", "unanswered")[0]["text"] == QUESTION


async def test_a_line_that_stops_sending_mid_turn_counts_as_silence_and_is_answered(runtime: Runtime) -> None:
    """The carrier stops sending frames right after the caller's words: without more audio the turn
    would stay open for ever. The stream counts the missing time as silence; the turn ends, the bot
    answers."""
    line = Line()
    session = await open_call(runtime, line)
    session.on_audio(caller_says(QUESTION, RATE))
    assert session.turns.in_turn
    chunks_before = line.audio_chunks
    await session.on_line_silence(0.7)  # what the stream does when no frame came for end_silence_ms
    assert not session.turns.in_turn
    await eventually(lambda: line.audio_chunks > chunks_before, "the bot answered")
    await session.close("socket_closed_1000")

    record = await record_of(runtime, session.call_id)
    assert caller_turns(record) == [QUESTION]
    assert ANSWER in next(t["text"] for t in record["turns"][2:] if t["role"] == "bot")
    (no_audio,) = events(record, "stream", "no_audio")
    assert no_audio == {"ms": 700, "counted_as": "silence"}
