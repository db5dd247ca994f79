"""Smoke test of the pipeline benchmark's harness on tiny inputs: one call, three prompts, no full run."""

from __future__ import annotations

import asyncio
import math
import struct
from pathlib import Path
from typing import Any

import pytest

from bench.pipeline import QUICK, LiveAsr, compile_figures
from bench.pipeline_asr import (
    OfflineAsr,
    count_turns,
    false_splits,
    load_prompts,
    offline_transcripts,
    recommend,
    wer_report,
)
from bench.pipeline_calls import Conversation, converse, playout_gaps, speak_prompts
from bench.pipeline_load import Sampler, knee, memory_per_call
from bench.pipeline_service import ASR_PROBE, WEBHOOK_SECRET, ServiceProcess, write_config
from bench.pipeline_stats import latency_stats
from bench.pipeline_summary import summary, write_chart
from testkit.simulator import PiopiySimulator

PROMPTS = ("agent-pass", "vm-goodbye", "agent-incorrect")  # short, one word, two sentences


def _prompts() -> list[Any]:
    by_name = {p.name: p for p in load_prompts()}
    return [by_name[name] for name in PROMPTS]


def test_one_call_and_three_prompts_through_a_service_process(tmp_path: Path) -> None:
    prompts = _prompts()
    expected = [count_turns(p.pcm, 700)[0] for p in prompts]
    assert expected[:2] == [1, 1]  # the two-sentence prompt may split at 700 ms: whatever it does is counted

    async def scenario(svc: ServiceProcess) -> tuple[Conversation, list[Any], dict[str, Any]]:
        async with svc.client() as api:
            async with Sampler(svc, api, interval_s=0.2) as sampler:
                sim = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET)
                conv = await converse(
                    sim, api, ASR_PROBE.number, ["What are your opening hours?"], floor=asyncio.Lock()
                )
            fast = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET, speed=math.inf, max_lead_s=None)
            spoken = [(p.name, p.pcm, e) for p, e in zip(prompts, expected, strict=True)]
            heard = await speak_prompts(fast, api, ASR_PROBE.number, spoken)
        return conv, heard, sampler.summary()

    config = write_config(tmp_path, [ASR_PROBE], shipped=False)
    with ServiceProcess(config, tmp_path / "service.log") as svc:
        assert svc.rss_mb() > 50 and svc.cpu_s() > 0
        conv, heard, sampled = asyncio.run(scenario(svc))

    assert not conv.error
    (turn,) = conv.turns()
    assert "hours" in turn["heard"].lower()
    assert 0 < turn["response_ms"] < 5000 and abs(turn["client_ms"] - turn["response_ms"]) < 300
    stats = latency_stats(conv.turns())
    assert stats["answered"] == 1 and stats["response_ms"]["p50"] == turn["response_ms"]
    gaps = playout_gaps(conv)
    assert gaps["chunks"] >= 2 and gaps["late"] == 0  # the greeting and the reply, played without a gap
    assert sampled["rss_mb_peak"] > 50 and 0 <= sampled["service_cpu_frac"] <= 1
    assert sampled["loop_lag_max_ms_before_after"][0] <= sampled["loop_lag_max_ms_before_after"][1]

    assert [h.name for h in heard] == list(PROMPTS) and not any(h.timed_out for h in heard)
    live = [" ".join(t for t in h.texts if t) for h in heard]
    assert "password" in live[0].lower() and "goodbye" in live[1].lower()
    assert [len(h.texts) for h in heard] == [max(1, e) for e in expected]


def test_false_splits_and_offline_wer_on_three_prompts(tmp_path: Path) -> None:
    prompts = _prompts()
    splits = false_splits(prompts, [300, 700])
    assert splits["700"]["prompts"] == 3 and splits["700"]["missed"] == 0
    assert splits["300"]["split"] >= splits["700"]["split"]
    assert recommend(splits, [300, 700], limit=1.0) == 300
    offline = asyncio.run(offline_transcripts(prompts, tmp_path, 700))
    assert len(offline.whole) == len(offline.turns) == 3 and "password" in offline.turns[0].lower()
    report = wer_report(prompts, offline.turns, offline)
    assert report["wer_pipeline"] == report["wer_offline_on_turn_audio"] < 0.3
    assert report["pipeline_same_text_as_offline_on_turn_audio"] == 3


def _conversation(arm: str, responses: list[int]) -> Conversation:
    turns = [{"role": "bot", "text": "Hello.", "latency_ms": {}}]
    for ms in responses:
        latency = {"endpoint_ms": 700, "asr_ms": 500, "asr_speculative_hit": True}
        latency |= {"dialogue_first_text_ms": 1, "tts_first_audio_ms": 250, "response_ms": ms}
        turns += [{"role": "caller", "text": "When are you open?", "latency_ms": latency}]
    return Conversation(arm, "0", call_id="c", record={"turns": turns})


def _level(calls: int, p95: float, rss: float) -> dict[str, Any]:
    return {
        "calls": calls,
        "response_ms": {"p50": p95 - 100, "p95": p95},
        "asr_ms": {"p95": 600.0},
        "playout": {"late_rate": 0.0, "late_chunks": 0, "chunks": 10},
        "service_cpu_frac": 0.2 * calls,
        "machine_busy_frac": 0.3 * calls,
        "model_queue_depth_max": calls // 2,
        "loop_lag_max_ms_during": None,
        "rss_mb_peak": rss,
    }


def test_figures_summary_and_chart(tmp_path: Path) -> None:
    prompts = _prompts()
    levels = [_level(1, 1000, 600), _level(2, 1200, 620), _level(4, 2500, 660)]
    assert knee(levels)["calls_within"] == 2 and "CPU" in knee(levels)["limited_by"]
    memory = memory_per_call(500, levels)
    assert memory["first_call_warmup_mb"] == 100 and memory["mb_per_additional_call"] == pytest.approx(
        20, abs=1
    )
    latency = {
        "ours": [_conversation("ours", [1000, 1100, 1200])],
        "segmented_baseline": [_conversation("segmented_baseline", [1800, 1900, 2000])],
        "end_silence_500": [_conversation("end_silence_500", [900])],
    }
    live = LiveAsr({p.name: [p.text] for p in prompts}, {p.name: 1 for p in prompts}, [])
    load = {
        "idle": {"rss_mb": 500.0, "startup_s": 3.0},
        "levels": levels,
        "rss_mb_idle_after_all_levels": 640,
    }
    splits = false_splits(prompts, [500, 700])
    offline = OfflineAsr([p.text for p in prompts], [p.text for p in prompts])
    figures = compile_figures(QUICK, latency, {}, splits, prompts, live, offline, load)
    assert figures["response_latency"]["ratio_ours_vs_baseline"] == {"p50": round(1100 / 1900, 3), "p95": 0.6}
    assert figures["asr_accuracy"]["wer_pipeline"] == 0.0
    assert figures["end_silence_tuning"]["recommended_end_silence_ms"] in (500, 700)
    lines = summary(figures)
    assert any("ratio p50 0.579" in line for line in lines)
    png = write_chart(figures, tmp_path / "chart.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (1400, 1020)
