"""Facts read off a call record (the JSON of `GET /api/calls/{id}`): times, length, answers, barge-ins.

Turn times count from `started_at`; the recording and the barge-in onsets count from `connected_at`, so
they are shifted by the difference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Record = Mapping[str, Any]


def seconds_at(record: Record, at: str | None) -> float | None:
    """Seconds from the record's `started_at` to an ISO time such as "2026-11-21T18:13:45.486Z"."""
    start = record.get("started_at")
    if not at or not start:
        return None
    return (_parse_time(at) - _parse_time(start)).total_seconds()


def stream_offset_s(record: Record) -> float:
    """Seconds from `started_at` to `connected_at`: time zero of the recording and of barge-in onsets."""
    return max(0.0, seconds_at(record, record.get("connected_at")) or 0.0)


def call_duration_s(record: Record) -> float:
    """The call's length in seconds: its `duration_s`, or the end of the last thing in it."""
    ends = [float(record.get("duration_s") or 0.0)]
    ends += [float(t.get("end_ms") or 0) / 1000 for t in record.get("turns") or []]
    ends += [seconds_at(record, a.get("at")) or 0.0 for a in record.get("actions") or []]
    return max(ends) or 1.0


def answered_in(turns: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Bot turn position → the `response_ms` of the caller turn it answered."""
    answers: dict[int, float] = {}
    pending: float | None = None
    for i, turn in enumerate(turns):
        if turn.get("role") == "caller":
            response = (turn.get("latency_ms") or {}).get("response_ms")
            pending = float(response) if response is not None else None
        elif pending is not None:
            answers[i], pending = pending, None
    return answers


def barge_ins(record: Record) -> list[tuple[float, float]]:
    """Each barge-in as (onset, detection) in seconds from `started_at`."""
    offset, found = stream_offset_s(record), []
    for event in record.get("events") or []:
        payload = event.get("payload") or {}
        if event.get("source") == "turns" and event.get("status") == "barge_in" and "onset_ms" in payload:
            onset = offset + float(payload["onset_ms"]) / 1000
            found.append((onset, onset + float(payload.get("detected_after_ms") or 0) / 1000))
    return found


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
