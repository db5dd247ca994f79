"""CallLine alone: the caller's audio is the clock, the bot's audio reaches the link, listeners and the
recording at the caller's position, and a cut keeps only what the caller heard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.call.line import CallLine
from agent.records.recordings import GuardedRecording
from agent.worker.listen import BOT, CALLER, END, ListenHub, unpack
from testkit.call_fakes import FakeLink

RATE = 8000


def a_line(tmp_path: Path) -> tuple[CallLine, FakeLink, ListenHub]:
    link, hub = FakeLink(), ListenHub()
    failures: list[str] = []
    recording = GuardedRecording(tmp_path / "c_1", RATE, lambda error, at: failures.append(error))
    return CallLine(link, recording, hub, call_id="c_1", sample_rate=RATE), link, hub


async def test_the_callers_audio_sets_the_calls_clock(tmp_path: Path) -> None:
    line, _, _ = a_line(tmp_path)
    now = line.caller_audio(bytes(2 * RATE))  # one second of caller audio
    assert line.last_audio_at == now
    assert line.caller_sample_at(now) == RATE
    assert line.caller_sample_at(now + 0.5) == RATE + RATE // 2
    assert line.caller_sample_at(now - 5) == 0  # never before the call began


async def test_the_bots_audio_reaches_the_link_and_listeners_and_the_end_reaches_listeners(
    tmp_path: Path,
) -> None:
    line, link, hub = a_line(tmp_path)
    ear = hub.listen("c_1")
    line.caller_audio(bytes(160))
    line.new_reply()
    await line.playout.play(bytes(2 * RATE // 10), until_played=False)  # 100 ms
    assert link.audio_chunks == 1 and line.first_audio_at is not None
    assert line.playing
    line.ended()
    channels = [unpack(ear.queue.get_nowait())[0] for _ in range(ear.queue.qsize())]
    assert channels == [CALLER, BOT, END]


async def test_a_cut_reply_counts_only_what_the_caller_heard(tmp_path: Path) -> None:
    line, _, _ = a_line(tmp_path)
    line.caller_audio(bytes(160))
    line.new_reply()
    started = time.monotonic()
    await line.playout.play(bytes(2 * RATE), until_played=False)  # one second, sent ahead
    await asyncio.sleep(0.1)
    heard = line.cut()
    played = time.monotonic() - started
    assert 0 < heard <= round(played * RATE) < RATE
    assert not line.playing
