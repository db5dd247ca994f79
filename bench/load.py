"""Load profile: the orchestration layer under 200 concurrent simulated calls, speech models stood in.

A separate profile from the pipeline benchmark: Whisper and piper are replaced by the stand-ins of
testkit/standins.py (an ASR that matches the caller's utterance by its loudness contour after a
30 ms sleep on the model pool, a TTS that returns a tone of plausible length), so that what is measured
is everything else, as production runs it: answer_url over HTTP with the webhook secret, signed stream
tokens, one WebSocket per call with 20 ms L16 frames in real time, VAD and turn-taking, speculative
ASR, the scripted dialogue, escalation rules and transfers (bridge PCMOs), records in SQLite, and
two-channel recordings.

The service runs in its own process (`bench.pipeline_service --stand-ins`); the callers in `processes`
others (bench/load_calls.py). Calls ramp in over `ramp_s`, each waits through its greeting, and all
hold the line until the ramp is over; then each asks `questions` questions (real speech PCM, the test
caller voice; every other call ends with one that is transferred) and hangs up. A baseline of single
calls, one at a time, runs first on the same service: latencies under load are given as ratios to it.

The bot is support_desk as shipped but for `silence_timeout_s` (60 s instead of 8 s): callers holding
the line until every call is connected would otherwise be asked whether they are still there.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from bench.load_calls import CallerJob, CallPlan, check_records, run_calls, run_jobs
from bench.load_monitor import Monitor, as_rows, summary
from bench.pipeline_calls import OPENING_HOURS, RATE, caller_audio, questions_for
from bench.pipeline_service import WEBHOOK_SECRET, BenchBot, ServiceProcess, write_config
from bench.pipeline_stats import dist, pct
from testkit.standins import voice_print

LOGS = Path(__file__).resolve().parents[1] / "var" / "bench"
"""The service's log of the last run is kept here (var/ is not committed)."""
LOAD_DESK = BenchBot("load_desk", "918040008800", {"silence_timeout_s": 60.0})


@dataclass(frozen=True)
class LoadPlan:
    """How big a load run is."""

    calls: int = 200
    ramp_s: float = 20.0  # the calls start spread over this long
    greeting_s: float = 8.0  # after the last call starts, enough for its greeting to play out
    talk_spread_s: float = 5.0  # the calls' first questions start spread over this long
    questions: int = 2
    processes: int = 2  # caller processes
    baseline_calls: int = 3


FULL = LoadPlan()
QUICK = replace(FULL, calls=50, ramp_s=8.0, processes=1, baseline_calls=2)


def load_questions(index: int, count: int) -> tuple[str, ...]:
    """Even calls: opening hours, then a question that is transferred; odd calls: opening hours only."""
    if index % 2 == 0:
        return tuple(questions_for(index, count))
    return tuple(OPENING_HOURS[(index + 2 * k) % len(OPENING_HOURS)] for k in range(count))


def run(plan: LoadPlan = FULL) -> dict[str, Any]:
    """Start a stand-in service, run the baseline and the load, and return the figures."""
    texts = sorted(
        {q for i in range(max(plan.calls, plan.baseline_calls)) for q in load_questions(i, plan.questions)}
    )
    clips = {text: caller_audio(text) for text in texts}
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        lexicon = root / "lexicon.json"
        lexicon.write_text(json.dumps({text: voice_print(pcm, RATE) for text, pcm in clips.items()}))
        config = write_config(root / "service", [LOAD_DESK])
        log = LOGS / "load-service.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with ServiceProcess(config, log, stand_ins=lexicon) as svc:
            startup_s = time.perf_counter() - started
            figures = asyncio.run(_measure(svc, plan, clips, root / "service" / "recordings"))
        figures["service"] = {"startup_s": round(startup_s, 1), **log_problems(log)}
    figures["_plan"] = plan.__dict__
    return figures


async def _measure(
    svc: ServiceProcess, plan: LoadPlan, clips: dict[str, bytes], recordings: Path
) -> dict[str, Any]:
    async with svc.client() as api:
        idle_mb = round(svc.rss_mb(), 1)
        base_calls: list[dict[str, Any]] = []
        for i in range(plan.baseline_calls):  # one call at a time, callers in this process
            job = _job(svc.url, clips, [CallPlan(i, time.time(), load_questions(i, plan.questions))])
            base_calls += (await run_calls(job))["calls"]
        base_records = await check_records(api, base_calls, recordings)

        t0 = time.time() + 5.0  # caller processes spawn and import meanwhile
        talk_at = t0 + plan.ramp_s + plan.greeting_s
        plans = [
            CallPlan(
                i,
                t0 + i * plan.ramp_s / plan.calls,
                load_questions(i, plan.questions),
                talk_at=talk_at + plan.talk_spread_s * ((i * 7919) % plan.calls) / plan.calls,
            )
            for i in range(plan.calls)
        ]
        jobs = [_job(svc.url, clips, plans[k :: plan.processes]) for k in range(plan.processes)]
        async with Monitor(svc, api, interval_s=1.0) as monitor:
            reports = await run_jobs(jobs)
        calls = [c for r in reports for c in r["calls"]]
        records = await check_records(api, calls, recordings)
        leaked = await wait_idle(api)
        stored = (await api.get("/api/calls", params={"limit": 1})).json()["total"]
    peak = max(s.active_calls for s in monitor.samples)
    at_peak = [s for s in monitor.samples if s.active_calls >= 0.95 * peak]
    placed = len(base_calls) + len(calls)
    return {
        "calls": {
            "planned": plan.calls,
            "placed": len(calls),
            "errors": sum(1 for c in calls if c["error"]),
            "first_errors": [c["error"] for c in calls if c["error"]][:5],
            "peak_concurrent": peak,
            "recorded": records["recorded"],
            "record_problems": records["first_problems"],
            "store_total_vs_placed": [stored, placed],
            "transcripts_matched": _matched(records["turns"]),
            "sessions_left_after": leaked,
        },
        "latency": compare(base_records["turns"], records["turns"]),
        "playout": playout(calls),
        "service_at_peak": summary(at_peak),
        "service_whole_run": summary(monitor.samples),
        "rss_mb_idle": idle_mb,
        "callers": callers(reports),
        "samples": as_rows(monitor.samples),
    }


def _job(url: str, clips: dict[str, bytes], plans: list[CallPlan]) -> CallerJob:
    return CallerJob(url, WEBHOOK_SECRET, LOAD_DESK.number, clips, tuple(plans))


def compare(base: list[dict[str, Any]], load: list[dict[str, Any]]) -> dict[str, Any]:
    """Response latency (the record's end of speech → first reply audio, and the caller's view) under
    load against the baseline, with ratios of p50, p95, p99."""
    out: dict[str, Any] = {}
    for key in ("response_ms", "client_ms", "endpoint_ms", "asr_ms", "tts_first_audio_ms"):
        b = [float(t[key]) for t in base if isinstance(t.get(key), (int, float))]
        v = [float(t[key]) for t in load if isinstance(t.get(key), (int, float))]
        qs = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
        out[key] = {
            "baseline": {**dist(b), "p99": pct(b, 0.99)},
            "load": {**dist(v), "p99": pct(v, 0.99)},
            "ratio": {q: _ratio(pct(v, x), pct(b, x)) for q, x in qs.items()},
        }
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def _matched(turns: list[dict[str, Any]]) -> list[int]:
    """[caller turns whose text is what was said, caller turns] (the stand-in ASR's correctness)."""
    return [sum(1 for t in turns if t["heard"] == t["asked"]), len(turns)]


def playout(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Late audio chunks over all calls (the caller's playback queue ran dry inside a bot line)."""
    chunks = sum(int(c["playout"].get("chunks", 0)) for c in calls)
    late = sum(int(c["playout"].get("late", 0)) for c in calls)
    return {
        "chunks": chunks,
        "late_chunks": late,
        "late_rate": round(late / max(chunks, 1), 4),
        "worst_gap_ms": max((c["playout"].get("worst_ms", 0) for c in calls), default=0),
    }


def callers(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The caller processes: how many, their CPU, and whether their own loops kept up."""
    return {
        "processes": len(reports),
        "cpu_frac_of_a_core": [round(r["cpu_s"] / max(r["wall_s"], 1e-9), 2) for r in reports],
        "loop_lag_ms": [r["loop_lag_ms"] for r in reports],
        "unfinished": sum(r["unfinished_lanes"] for r in reports),
        "crashed": [c for r in reports for c in r["crashed"]],
    }


async def wait_idle(api: httpx.AsyncClient, timeout_s: float = 15.0) -> int:
    """Live calls left in the service once every caller has hung up (0 when none leaked)."""
    deadline = time.monotonic() + timeout_s
    while True:
        active = int((await api.get("/healthz")).json()["active_calls"])
        if active == 0 or time.monotonic() > deadline:
            return active
        await asyncio.sleep(0.5)


def log_problems(path: Path) -> dict[str, Any]:
    """Errors and tracebacks the service logged."""
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    bad = [line for line in lines if "Traceback" in line or "ERROR" in line or " failed" in line]
    return {"log_error_lines": len(bad), "first_log_errors": bad[:5]}


def summary_lines(f: dict[str, Any]) -> list[str]:
    """The headline figures."""
    c, lat, p = f["calls"], f["latency"]["response_ms"], f["playout"]
    peak, cl = f["service_at_peak"], f["callers"]
    return [
        f"{c['placed']} calls ({c['peak_concurrent']} at once): {c['errors']} errors, "
        f"{c['recorded']} recorded, "
        f"store {c['store_total_vs_placed'][0]}/{c['store_total_vs_placed'][1]}, "
        f"transcripts {c['transcripts_matched'][0]}/{c['transcripts_matched'][1]}, "
        f"sessions left {c['sessions_left_after']}",
        f"response ms p50/p95/p99 {lat['load']['p50']}/{lat['load']['p95']}/{lat['load']['p99']} vs 1 call "
        f"{lat['baseline']['p50']}/{lat['baseline']['p95']}/{lat['baseline']['p99']}: ratio "
        f"{lat['ratio']['p50']}/{lat['ratio']['p95']}/{lat['ratio']['p99']}",
        f"late chunks {p['late_chunks']}/{p['chunks']}; loop lag p99 {peak.get('loop_lag_p99_ms_max')} ms, "
        f"max {peak.get('loop_lag_max_ms')} ms; model queue max {peak.get('model_queue_depth_max')}",
        f"at peak: service CPU {peak.get('service_cpu_frac_of_machine')} of the machine, machine busy "
        f"{peak.get('machine_busy_frac')}, RSS start/peak/end {peak.get('rss_mb_start_peak_end')} MB, "
        f"load avg {peak.get('load_avg_1m_min_max')}",
        f"callers: {cl['processes']} processes, CPU {cl['cpu_frac_of_a_core']} of a core, their loop lag "
        f"p99 {[x['p99'] for x in cl['loop_lag_ms']]} ms",
        f"service log: {f['service']['log_error_lines']} error lines",
    ]
