"""A stored call turned into a scenario fixture: its caller turns as clips, its outcome as expectations.

`hotline replay NEW.yaml --record-from URL CALL_ID` reads the call's record and two-channel recording
from a running service, cuts each caller turn out of the caller channel (with a little margin) into
`NEW/turnN.wav` (mono, at the call's rate), and writes `NEW.yaml`: the turns in order (a turn that
started while the bot was speaking becomes a barge-in at the same offset), keypad input and the
agent's answer where the call had them, and an `expect:` section pre-filled from what happened.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from pipelines.audio import write_wav
from testkit.expect import expectations_from_record
from testkit.replay import finished_record

MARGIN_MS = 150
"""Audio kept before and after each caller turn, so the turn detector hears it start and end."""


def _ms(record: dict[str, Any], iso: str) -> int:
    """An ISO time of the record as milliseconds since the call started."""
    start = dt.datetime.fromisoformat(record["started_at"])
    return round((dt.datetime.fromisoformat(iso) - start).total_seconds() * 1000)


def caller_pcm(wav_bytes: bytes) -> tuple[np.ndarray[Any, np.dtype[np.int16]], int]:
    """The caller (left) channel of a call recording."""
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        channels, rate = wav.getnchannels(), wav.getframerate()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return (frames.reshape(-1, channels)[:, 0] if channels > 1 else frames).copy(), rate


def steps_of(record: dict[str, Any], clips: list[str]) -> list[dict[str, Any]]:
    """The caller's steps, in time order: clips (barge-ins where the bot was speaking), DTMF, events."""
    timed: list[tuple[int, dict[str, Any]]] = []
    bots = [t for t in record["turns"] if t["role"] == "bot" and t["start_ms"] is not None]
    callers = [t for t in record["turns"] if t["role"] == "caller"]
    for turn, clip in zip(callers, clips, strict=True):
        step: dict[str, Any] = {"audio": clip}
        speaking = next(
            (b for b in bots if b["start_ms"] <= turn["start_ms"] < (b["end_ms"] or b["start_ms"])), None
        )
        if speaking is not None:
            step["barge_in_ms"] = max(0, turn["start_ms"] - MARGIN_MS - speaking["start_ms"])
        timed.append((turn["start_ms"], step))
    for event in record["events"]:
        if (event["source"], event["status"]) == ("dtmf", "digits"):
            timed.append((_ms(record, event["at"]), {"dtmf": str(event["payload"]["dtmf"])}))
        elif (event["source"], event["status"]) == ("transfer", "answered"):
            timed.append((_ms(record, event["at"]), {"event": "out_answered"}))
    steps = [step for _, step in sorted(timed, key=lambda pair: pair[0])]
    if record.get("end_reason") == "caller_hangup":
        steps.append({"hangup": True})
    return steps


async def write_fixture(url: str, api_key: str, call_id: str, target: Path) -> Path:
    """Write `target` (a scenario YAML) and its clips from the stored call `call_id` at `url`, read
    through its API with `api_key`."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    ) as http:
        record = await finished_record(http, call_id)
        response = await http.get(f"/api/calls/{call_id}/recording")
        response.raise_for_status()
    pcm, rate = caller_pcm(response.content)
    # The recording starts when the stream connected; turn times count from the call's start.
    offset = _ms(record, record["connected_at"]) if record.get("connected_at") else 0
    clip_dir = target.parent / target.stem
    clip_dir.mkdir(parents=True, exist_ok=True)
    clips: list[str] = []
    callers = [t for t in record["turns"] if t["role"] == "caller"]
    for n, turn in enumerate(callers, 1):
        start = max(0, (turn["start_ms"] - offset - MARGIN_MS) * rate // 1000)
        end = min(len(pcm), (turn["end_ms"] - offset + MARGIN_MS) * rate // 1000)
        clip = clip_dir / f"turn{n}.wav"
        write_wav(clip, pcm[start:end].astype("<i2").tobytes(), rate)
        clips.append(f"{target.stem}/{clip.name}")
    scenario = {
        "description": f"Recorded from call {call_id} ({record['started_at']}); edit to taste.",
        "bot": record["bot"],
        "speed": 1,
        "caller": steps_of(record, clips),
        "expect": expectations_from_record(record),
    }
    text = yaml.safe_dump(scenario, sort_keys=False, allow_unicode=True)
    await asyncio.to_thread(target.write_text, text)
    return target
