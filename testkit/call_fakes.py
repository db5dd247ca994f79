"""Test doubles for one call at CPU speed: a carrier link, a transcriber and a dialogue, all scripted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agent.config.bot import Department
from agent.dialogue.base import CallContext, DialogueAction, TextDelta, Understanding
from agent.telephony.carrier import Audio, Inbound, Junk, Metadata, Sent
from pipelines.asr import Transcript


class FakeLink:
    """A carrier that keeps everything the call sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []  # ("audio", bytes) | ("clear", None) | (action, payload)
        self.closed = False

    @property
    def open(self) -> bool:
        return not self.closed

    def decode(self, message: bytes | str) -> Inbound:
        if isinstance(message, bytes):
            return Audio(message[: len(message) - len(message) % 2])
        return (
            Metadata(message, {}, len(message))
            if message.startswith("uuid:")
            else Junk(message, len(message))
        )

    async def send_audio(self, pcm: bytes) -> None:
        if not self.closed:
            self.sent.append(("audio", pcm))

    async def clear(self) -> None:
        self.sent.append(("clear", None))

    async def transfer(self, department: Department, *, caller_id: str) -> Sent:
        self.sent.append(("transfer", list(department.numbers)))
        return Sent("transfer", {"numbers": list(department.numbers), "caller_id": caller_id})

    async def hangup(self) -> Sent:
        self.sent.append(("hangup", None))
        return Sent("hangup", {})

    async def play(self, url: str) -> Sent:
        self.sent.append(("play", url))
        return Sent("play", {"url": url})

    def close(self) -> None:
        self.closed = True

    @property
    def audio_chunks(self) -> int:
        return sum(1 for kind, _ in self.sent if kind == "audio")

    def kinds(self) -> list[str]:
        """What was sent, audio runs folded into one "audio"."""
        out: list[str] = []
        for kind, _ in self.sent:
            if not (kind == "audio" and out and out[-1] == "audio"):
                out.append(kind)
        return out


class FakeTranscriber:
    """Hears whatever the test says the caller is saying now (`text`), whatever the audio."""

    def __init__(self, sample_rate: int, text: str = "") -> None:
        self.sample_rate_in = sample_rate
        self.text = text
        self.calls = 0
        self.gate: asyncio.Event | None = None  # when set: transcriptions wait for it

    async def transcribe(self, pcm: bytes) -> Transcript:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        return Transcript(text=self.text, language="en", asr_ms=1.0, level_dbfs=-20.0, segments=1)

    def for_language(self, language: str | None) -> FakeTranscriber:
        return self


@dataclass
class FakeDialogue:
    """Answers each caller turn with the next scripted reply (text pieces, then actions)."""

    understanding: Understanding = field(default_factory=Understanding)
    replies: dict[str, list[str | DialogueAction]] = field(default_factory=dict)
    default: list[str | DialogueAction] = field(default_factory=lambda: ["Sure, one moment."])
    asked: list[str] = field(default_factory=list)
    heard_calls: list[tuple[str, str]] = field(default_factory=list)
    retracted: int = 0
    gate: asyncio.Event | None = None  # when set: the reply's first text waits for it
    fail_with: Exception | None = None

    async def reply(self, caller_text: str) -> AsyncIterator[TextDelta | DialogueAction]:
        self.asked.append(caller_text)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        for item in self.replies.get(caller_text, self.default):
            yield TextDelta(item) if isinstance(item, str) else item

    def heard(self, said: str, heard: str) -> None:
        self.heard_calls.append((said, heard))

    def retract(self) -> None:
        self.retracted += 1


def dialogue_factory(dialogue: FakeDialogue) -> Any:
    """A `Runtime.new_dialogue` stand-in that gives every call `dialogue`."""

    def new_dialogue(ctx: CallContext, toolbox: Any, *, run_tool: Any) -> FakeDialogue:
        return dialogue

    return new_dialogue
