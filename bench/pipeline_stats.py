"""Percentiles and the per-turn latency summary shared by the pipeline benchmark's phases."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (nearest rank), rounded; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def dist(values: Sequence[float]) -> dict[str, float | int | None]:
    """p50, p95, max and count."""
    return {
        "p50": pct(values, 0.5),
        "p95": pct(values, 0.95),
        "max": round(max(values), 1) if values else None,
        "n": len(values),
    }


def _numbers(turns: list[dict[str, Any]], key: str) -> list[float]:
    return [float(t[key]) for t in turns if isinstance(t.get(key), (int, float))]


def latency_stats(turns: list[dict[str, Any]]) -> dict[str, Any]:
    """Distributions of the record's per-turn latencies, the caller-side response time, and the wait for
    ASR after the endpoint (response − endpoint − dialogue − TTS first audio: what speculation hides)."""
    answered = [t for t in turns if isinstance(t.get("response_ms"), (int, float))]
    waits = [
        t["response_ms"] - t["endpoint_ms"] - (t.get("dialogue_first_text_ms") or 0) - t["tts_first_audio_ms"]
        for t in answered
        if isinstance(t.get("tts_first_audio_ms"), (int, float))
    ]
    hits = [bool(t["asr_speculative_hit"]) for t in turns if "asr_speculative_hit" in t]
    both = [t for t in answered if isinstance(t.get("client_ms"), (int, float))]
    return {
        "turns": len(turns),
        "answered": len(answered),
        "response_ms": dist(_numbers(answered, "response_ms")),
        "client_ms": dist(_numbers(both, "client_ms")),
        "client_minus_record_ms_median": (
            round(statistics.median(t["client_ms"] - t["response_ms"] for t in both), 1) if both else None
        ),
        "endpoint_ms": dist(_numbers(turns, "endpoint_ms")),
        "asr_ms": dist(_numbers(turns, "asr_ms")),
        "asr_wait_ms": dist(waits),
        "tts_first_audio_ms": dist(_numbers(answered, "tts_first_audio_ms")),
        "dialogue_first_text_ms": dist(_numbers(answered, "dialogue_first_text_ms")),
        "asr_speculative_hit_rate": round(sum(hits) / len(hits), 3) if hits else None,
    }
