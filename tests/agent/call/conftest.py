"""One CallSession at CPU speed: stand-in voices, a fake link, a fake transcriber, a fake dialogue."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.call.session import CallSession
from agent.config.settings import load_settings
from agent.worker.bus import Subscription
from agent.worker.logs import for_call
from agent.worker.runtime import Runtime, new_call_id
from testkit.call_fakes import FakeDialogue, FakeLink, FakeTranscriber, dialogue_factory
from testkit.caller_voice import caller_says
from testkit.standins import StandInModels
from tests.agent.conftest import WEBHOOK_SECRET, write_config
from tests.agent.faults import eventually

RATE = 8000
BOT = "support_desk"


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * RATE))


@functools.cache
def speech() -> bytes:
    """A caller's voice (what it says is the fake transcriber's business)."""
    return caller_says("Could you tell me something about that", RATE)


@dataclass
class Call:
    """A live call and its fakes."""

    runtime: Runtime
    session: CallSession
    link: FakeLink
    asr: FakeTranscriber
    dialogue: FakeDialogue
    live: Subscription
    seen: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def says(self, text: str, *, then_silence_s: float = 1.0) -> None:
        """The caller says `text` (the fake ASR hears it), then is silent."""
        self.asr.text = text
        self.session.on_audio(speech() + silence(then_silence_s))

    async def replying(self) -> None:
        """Wait until the bot's reply is on the line."""
        await eventually(lambda: self.session.line.playing, "the bot speaks", timeout=5)

    def live_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The live events since the last call."""
        out = []
        while not self.live.queue.empty():
            event = self.live.queue.get_nowait()
            out.append((event.kind, event.data))
        self.seen.extend(out)
        return out

    def live_events_kept(self) -> list[tuple[str, dict[str, Any]]]:
        """Every live event so far."""
        self.live_events()
        return list(self.seen)

    async def record(self) -> dict[str, Any]:
        await self.runtime.writer.flush(10)
        record = await self.runtime.store.call_record(self.session.call_id)
        assert record is not None
        return record


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    os.environ["HOTLINE_WEBHOOK_SECRET"] = WEBHOOK_SECRET
    os.environ["HOTLINE_STREAM_SECRET"] = "test-stream-secret-0123456789abcdef"
    settings = load_settings(write_config(tmp_path))
    settings.bots[BOT] = settings.bots[BOT].model_copy(update={"greeting": "Hi."})
    runtime = await Runtime.start(settings, StandInModels({}))
    yield runtime
    await runtime.stop()


@pytest.fixture
async def call(runtime: Runtime) -> AsyncIterator[Call]:
    """A call to support_desk that has heard its greeting and is listening."""
    asr = FakeTranscriber(RATE)
    runtime.transcribers[BOT] = asr
    dialogue = FakeDialogue()
    runtime.new_dialogue = dialogue_factory(dialogue)  # type: ignore[method-assign]
    call_id = new_call_id()
    for_call(call_id)
    await runtime.store.insert_call(
        id=call_id, bot=BOT, status="answered", started_at=time.time(), sample_rate=RATE
    )
    link = FakeLink()
    live = runtime.bus.subscribe(call_id)
    session = CallSession(runtime, call_id=call_id, bot_name=BOT, bot=runtime.settings.bots[BOT], link=link)
    runtime.calls.register(session)
    await session.start()
    session.on_audio(silence(0.2))
    await eventually(lambda: session.state == "listening" and link.audio_chunks > 0, "the greeting played")
    yield Call(runtime, session, link, asr, dialogue, live)
    await session.close("socket_closed_1000")
    live.close()
