"""Replay a recorded call: its caller channel, spoken again into a new call, at the same times.

Every call's recording is a stereo WAV (caller left, bot right, time-aligned from the moment the
stream opened). Replaying the left channel through the PIOPIY simulator reproduces what the caller
said and when, against the current service: a regression test made from a real call. The new call's
record is compared with the original's (`compare`): caller words, bot answers, actions, latencies.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from pipelines.text import normalize_transcript, wer
from testkit.simulator import PiopiySimulator


def caller_channel(path: str | Path) -> tuple[bytes, int]:
    """The caller's side (left channel) of a call recording, as int16 mono PCM and its rate."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: expected a 16-bit call recording, got {8 * wav.getsampwidth()}-bit")
        channels, rate = wav.getnchannels(), wav.getframerate()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if channels == 1:
        return frames.tobytes(), rate
    return frames.reshape(-1, channels)[:, 0].copy().tobytes(), rate


@dataclass(frozen=True)
class Replayed:
    """The new call made from a recording."""

    call_id: str
    seconds: float


async def replay(
    sim: PiopiySimulator,
    recording: str | Path,
    *,
    to_number: str,
    from_number: str = "919876543210",
    tail_s: float = 3.0,
) -> Replayed:
    """Call `to_number` and speak the recording's caller channel into it in real time, then give the
    bot `tail_s` to finish and hang up. Returns the new call's id."""
    pcm, rate = caller_channel(recording)
    async with await sim.place_call(to_number=to_number, from_number=from_number) as call:
        await call.say_pcm(pcm, rate)
        await call.silence(tail_s)
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=60)
        call_id = _call_id(call.pcmo)
    return Replayed(call_id, len(pcm) / 2 / rate)


async def finished_record(
    http: httpx.AsyncClient, call_id: str, *, timeout_s: float = 15.0
) -> dict[str, Any]:
    """A call's record from the API (`http` has the service's base URL and secret) once it has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await http.get(f"/api/calls/{call_id}")
        response.raise_for_status()
        record: dict[str, Any] = response.json()
        if record.get("ended_at") and not record.get("live"):
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"call {call_id} has not ended after {timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def replay_stored(sim: PiopiySimulator, http: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    """A stored call made again: its recording fetched over the API, its caller channel spoken into a new
    call to the same number at the original times. Returns the new call's record."""
    original = await finished_record(http, call_id)
    response = await http.get(f"/api/calls/{call_id}/recording")
    response.raise_for_status()
    with tempfile.TemporaryDirectory(prefix="hotline-replay-") as tmp:
        wav = Path(tmp) / f"{call_id}.wav"
        wav.write_bytes(response.content)
        again = await replay(
            sim, wav, to_number=original["to"], from_number=original["from"] or "919876543210"
        )
    return await finished_record(http, again.call_id)


def _call_id(pcmo: list[dict[str, Any]]) -> str:
    """Our call id, from the stream URL in the answer PCMO."""
    stream = next((a for a in pcmo if a.get("action") == "stream"), None)
    if stream is None:
        raise ValueError("the answer PCMO has no stream action: the number is not served by a bot")
    return str(httpx.URL(stream["ws_url"]).params["call"])


def compare(original: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """How a replayed call differs from its original: caller WER, bot lines, actions, latencies."""

    def lines(record: dict[str, Any], role: str) -> list[str]:
        return [t["text"] for t in record["turns"] if t["role"] == role]

    def actions(record: dict[str, Any]) -> list[str]:
        return [a["payload"][0]["action"] for a in record["actions"] if a["type"] == "pcmo" and a["payload"]]

    def responses(record: dict[str, Any]) -> list[int]:
        return [t["latency_ms"]["response_ms"] for t in record["turns"] if "response_ms" in t["latency_ms"]]

    caller_wer = wer(" ".join(lines(original, "caller")), " ".join(lines(again, "caller")))
    same_bot = [normalize_transcript(a) == normalize_transcript(b) for a, b in
                zip(lines(original, "bot"), lines(again, "bot"), strict=False)]  # fmt: skip
    return {
        "caller_wer": round(caller_wer, 3),
        "bot_lines": {"original": len(lines(original, "bot")), "replayed": len(lines(again, "bot"))},
        "bot_lines_same": sum(same_bot),
        "actions": {"original": actions(original), "replayed": actions(again)},
        "response_ms": {"original": responses(original), "replayed": responses(again)},
    }
