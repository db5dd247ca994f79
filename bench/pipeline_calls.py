"""The caller side of the pipeline benchmark: scripted conversations and prompt runs through the simulator.

A conversation waits for the greeting, then asks its questions one at a time in real time, each after
the bot has finished the previous reply. Per question it keeps the caller-side view: when the last
caller frame left (the audio is trimmed to its last syllable) and when the first bot audio came back.
The service's own record of the call holds its view: `latency_ms` per caller turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
import numpy as np

from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator, SimulatedCall, SimulatorError

RATE = 8000
OPENING_HOURS = (
    "What are your opening hours?",
    "When are you open on Saturday?",
    "What time do you open tomorrow?",
    "Are you open on Monday morning?",
    "What are your hours this week?",
)
# Each of these is answered, then transferred: asked last in a call, never followed by more questions.
TRANSFERS = (
    "I want to make a complaint.",
    "I was charged twice for the same payment.",
    "The app does not work on my phone.",
    "There is a fee on my statement.",
)


def questions_for(index: int, count: int = 3) -> list[str]:
    """The questions of call `index`: opening hours variants, then one question that is transferred."""
    opening = [OPENING_HOURS[(index + 2 * k) % len(OPENING_HOURS)] for k in range(count - 1)]
    return [*opening, TRANSFERS[index % len(TRANSFERS)]][-count:]


@cache
def caller_audio(text: str) -> bytes:
    """The test caller voice saying `text` (8 kHz), ending at its last audible sample, so the caller
    side knows when speech ended. The voice has no random prosody: every run hears the same audio."""
    pcm = caller_says(text, RATE)
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 32768 * 10 ** (-45 / 20))
    end = int(loud[-1]) + 1 if loud.size else samples.size
    return samples[:end].tobytes()


def call_id_of(call: SimulatedCall) -> str:
    """Our call id, from the PCMO's ws_url."""
    stream = next(a for a in call.pcmo if a.get("action") == "stream")
    return str(httpx.URL(stream["ws_url"]).params["call"])


@dataclass
class Asked:
    """One question as the caller lived it (monotonic seconds; line seconds on the call clock)."""

    text: str
    line_start: float
    line_end: float
    sent_at: float  # monotonic: the last caller frame left
    first_audio_at: float | None = None  # monotonic: the first bot audio after it arrived

    @property
    def client_ms(self) -> float | None:
        """End of caller audio → first bot audio frame received."""
        return None if self.first_audio_at is None else (self.first_audio_at - self.sent_at) * 1000


@dataclass
class Conversation:
    """A finished scripted call: what was asked, the bot audio received, and the service's record."""

    arm: str
    number: str
    call_id: str = ""
    asked: list[Asked] = field(default_factory=list)
    chunks: list[tuple[float, float]] = field(default_factory=list)  # (line time received, seconds)
    record: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def turns(self) -> list[dict[str, Any]]:
        """Per caller turn: the record's latencies, the text heard, and the caller-side response time."""
        caller = [t for t in self.record.get("turns", []) if t["role"] == "caller"]
        paired = len(caller) == len(self.asked)
        out = []
        for i, turn in enumerate(caller):
            asked = self.asked[i] if paired else None
            out.append(
                {
                    "arm": self.arm,
                    "asked": asked.text if asked else None,
                    "heard": turn["text"],
                    **turn["latency_ms"],
                    "client_ms": round(asked.client_ms, 1) if asked and asked.client_ms else None,
                }
            )
        return out

    def reply_windows(self) -> list[tuple[float, float]]:
        """Line-time windows holding one bot utterance each: the greeting, then one reply per question."""
        edges = [0.0] + [a.line_end for a in self.asked] + [float("inf")]
        starts = [a.line_start for a in self.asked] + [float("inf")]
        return [(edges[i], starts[i]) for i in range(len(edges) - 1)]


async def converse(
    sim: PiopiySimulator,
    api: httpx.AsyncClient,
    number: str,
    questions: list[str],
    *,
    arm: str = "",
    floor: asyncio.Lock | None = None,
    hold_s: float = 0.6,
    start_delay_s: float = 0.0,
) -> Conversation:
    """One scripted call. With `floor`, a question holds it from its first word to `hold_s` after the
    first reply audio, so no two measured turns of concurrent calls overlap."""
    await asyncio.sleep(start_delay_s)
    result = Conversation(arm, number)
    try:
        async with await sim.place_call(to_number=number) as call:
            result.call_id = call_id_of(call)
            await call.wait_for_bot_audio(timeout=20)
            await call.wait_until_bot_silent(quiet_s=0.5, timeout=60)
            for text in questions:
                pcm = caller_audio(text)
                async with floor if floor is not None else contextlib.nullcontext():
                    asked = Asked(text, call.now(), 0.0, 0.0)
                    await call.say_pcm(pcm, RATE)
                    asked.sent_at, asked.line_end = time.monotonic(), call.now()
                    result.asked.append(asked)
                    with contextlib.suppress(SimulatorError):
                        await call.wait_for_bot_audio(timeout=20, since=asked.line_end)
                        asked.first_audio_at = time.monotonic()
                        await asyncio.sleep(hold_s)
                await call.wait_until_bot_silent(quiet_s=0.5, timeout=60)
            result.chunks = [(t, len(a.audio) / 2 / a.sample_rate) for t, a in call.received_audio]
    except SimulatorError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    if result.call_id:
        result.record = await final_record(api, result.call_id)
    return result


async def final_record(api: httpx.AsyncClient, call_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The call's record once the service has closed it (or as it stands after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = (await api.get(f"/api/calls/{call_id}")).json()
        if (record.get("ended_at") and not record.get("live")) or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.1)


def playout_gaps(conv: Conversation, frame_s: float = 0.02) -> dict[str, float]:
    """Late chunks: within one bot utterance, a chunk that arrived more than one frame after the audio
    before it had finished playing, so the platform's queue ran dry and the caller heard a gap."""
    late = chunks = 0
    gap_s = worst_s = 0.0
    for lo, hi in conv.reply_windows():
        played_until: float | None = None
        for t, seconds in conv.chunks:
            if not lo <= t < hi:
                continue
            chunks += 1
            if played_until is not None and t - played_until > frame_s:
                late += 1
                gap_s += t - played_until
                worst_s = max(worst_s, t - played_until)
            played_until = (t if played_until is None else max(t, played_until)) + seconds
    return {"chunks": chunks, "late": late, "gap_ms": round(gap_s * 1000), "worst_ms": round(worst_s * 1000)}


# ------------------------------------------------------------------------------- prompts as turns


@dataclass
class PromptResult:
    """What the pipeline made of one prompt spoken as a caller turn."""

    name: str
    texts: list[str]  # caller turns it became, in order ("" for a turn the ASR guard rejected)
    timed_out: bool = False


def _outcomes(record: dict[str, Any]) -> tuple[list[str], int, list[str]]:
    """What the service finished so far: caller turns' texts, ASR rejections, and the texts of turns
    taken as backchannels ("mm-hmm" while the bot spoke)."""
    texts = [t["text"] for t in record.get("turns", []) if t["role"] == "caller"]
    rejected = backchannels = 0
    heard: list[str] = []
    for event in record.get("events", []):
        if event["source"] == "asr" and event["status"] == "rejected":
            rejected += 1
        elif event["source"] == "turns" and event["status"] == "backchannel":
            backchannels += 1
            heard.append(str((event.get("payload") or {}).get("text", "")))
    return texts, rejected, heard


def _count(outcomes: tuple[list[str], int, list[str]]) -> int:
    return len(outcomes[0]) + outcomes[1] + len(outcomes[2])


async def speak_prompts(
    sim: PiopiySimulator,
    api: httpx.AsyncClient,
    number: str,
    prompts: list[tuple[str, bytes, int]],
    *,
    trailing_silence_s: float = 1.2,
    timeout_s: float = 15.0,
) -> list[PromptResult]:
    """Speak (name, pcm, expected turns) prompts one by one into one call; wait for each one's turns.

    The simulator should run at `math.inf` speed without a lead limit (`max_lead_s=None`, on a service
    that does not pace): a prompt and its trailing silence arrive at once, which changes nothing for
    what is transcribed. The bot's short reply is let play out before the
    next prompt, so no prompt barges in.
    """
    results: list[PromptResult] = []
    async with await sim.place_call(to_number=number) as call:
        call_id = call_id_of(call)
        await call.wait_for_bot_audio(timeout=20)
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        for name, pcm, expected in prompts:
            texts0, rejected0, heard0 = _outcomes(await _record(api, call_id))
            before = len(texts0) + rejected0 + len(heard0)
            await call.say_pcm(pcm, RATE)
            await call.silence(trailing_silence_s)
            deadline = time.monotonic() + timeout_s
            seen, stable = before, 0
            while time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                now = _count(_outcomes(await _record(api, call_id)))
                stable = stable + 1 if now == seen else 0
                seen = now
                # Done: as many turns as the detector predicts (every prompt is speech: at least one), and
                # nothing new for a second (a second turn of the same prompt may still be transcribing).
                if seen - before >= max(1, expected) and stable >= 5:
                    break
            # Longer than a playout chunk: the service must be done playing the reply, or the next
            # prompt would barge in.
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
            texts, rejected, heard = _outcomes(await _record(api, call_id))
            new = texts[len(texts0) :] + heard[len(heard0) :] + [""] * (rejected - rejected0)
            results.append(PromptResult(name, new, timed_out=seen - before < max(1, expected)))
    return results


async def _record(api: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await api.get(f"/api/calls/{call_id}")).json()
    return record
