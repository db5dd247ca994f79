"""Soak: the real models at the concurrency the pipeline benchmark says holds, for minutes on end.

`lanes` calls are live at any time: each lane places a scripted call (greeting, `questions` questions
of the pipeline benchmark, the last one transferred, hang-up), and the next as soon as it ends, until
`minutes` have passed. The service (its own process, the shipped bots, piper and Whisper) is sampled
every `sample_s`: resident memory, CPU, loop lag, model queue. Reported: errors, calls recorded (every
one is checked in the store, with its recording), sessions left over, resident memory at the start and
end and its slope over the run without its first fifth (MB per minute), and the p95 response latency
per minute as a ratio to single calls measured first on the same service (the machine is shared: the
load average is reported beside it).

`python -m bench soak --minutes 10` is the full run; tests/bench/test_load_soak.py runs a short one.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.load import LOGS, callers, log_problems, playout, wait_idle
from bench.load_calls import CallerJob, CallPlan, check_records, run_calls, run_jobs
from bench.load_monitor import Monitor, as_rows, slope_mb_per_min, summary
from bench.pipeline_calls import OPENING_HOURS, TRANSFERS, caller_audio, questions_for
from bench.pipeline_service import SUPPORT_NUMBER, WEBHOOK_SECRET, ServiceProcess, write_config
from bench.pipeline_stats import dist, pct


@dataclass(frozen=True)
class SoakPlan:
    """How long and how wide a soak is."""

    minutes: float = 10.0
    lanes: int = 16  # calls live at once: the pipeline benchmark's largest level within 1.5 x (16)
    questions: int = 3
    stagger_s: float = 7.0  # the lanes start spread over this long
    baseline_calls: int = 2  # single calls first, one at a time
    sample_s: float = 10.0
    min_call_s: float = 25.0  # a lane starts no call that could not end by the deadline


FULL = SoakPlan()
SHORT = replace(FULL, minutes=0.3, lanes=2, questions=1, baseline_calls=0, sample_s=2.0, min_call_s=0.0)


def run(plan: SoakPlan = FULL) -> dict[str, Any]:
    """Start a service with the real models, run the baseline and the soak, and return the figures."""
    clips = {text: caller_audio(text) for text in (*OPENING_HOURS, *TRANSFERS)}
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        root = Path(tmp)
        config = write_config(root / "service", [])
        log = LOGS / "soak-service.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with ServiceProcess(config, log) as svc:
            startup_s = svc.startup_s
            figures = asyncio.run(_soak(svc, plan, clips, root / "service" / "recordings"))
        figures["service"] = {"startup_s": round(startup_s, 1), **log_problems(log)}
    figures["_plan"] = plan.__dict__
    return figures


async def _soak(
    svc: ServiceProcess, plan: SoakPlan, clips: dict[str, bytes], recordings: Path
) -> dict[str, Any]:
    async with svc.client() as api:
        idle_mb = round(svc.rss_mb(), 1)
        base_calls: list[dict[str, Any]] = []
        for i in range(plan.baseline_calls):
            job = CallerJob(svc.url, WEBHOOK_SECRET, SUPPORT_NUMBER, clips,
                            (CallPlan(i, time.time(), tuple(questions_for(i, plan.questions))),))  # fmt: skip
            base_calls += (await run_calls(job))["calls"]
        base = await check_records(api, base_calls, recordings)

        t0 = time.time() + 3.0
        until = t0 + plan.minutes * 60.0
        plans = tuple(CallPlan(k, t0 + k * plan.stagger_s / plan.lanes, ()) for k in range(plan.lanes))
        job = CallerJob(
            svc.url, WEBHOOK_SECRET, SUPPORT_NUMBER, clips, plans, until=until, lane_stride=plan.lanes,
            questions=plan.questions, min_call_s=plan.min_call_s,
        )  # fmt: skip
        async with Monitor(svc, api, interval_s=plan.sample_s) as monitor:
            (report,) = await run_jobs([job])
        calls = report["calls"]
        records = await check_records(api, calls, recordings)
        leaked = await wait_idle(api)
        await asyncio.sleep(2.0)
        idle_after = round(svc.rss_mb(), 1)
        stored = (await api.get("/api/calls", params={"limit": 1})).json()["total"]
    samples = monitor.samples
    steady = [s for s in samples if s.t >= 0.2 * samples[-1].t]  # without the first fifth: warm-up
    base_p95 = pct([float(t["response_ms"]) for t in base["turns"] if t.get("response_ms") is not None], 0.95)
    return {
        "calls": {
            "placed": len(calls),
            "errors": sum(1 for c in calls if c["error"]),
            "first_errors": [c["error"] for c in calls if c["error"]][:5],
            "recorded": records["recorded"],
            "record_problems": records["first_problems"],
            "store_total_vs_placed": [stored, len(calls) + len(base_calls)],
            "sessions_left_after": leaked,
            "caller_processes": callers([report]),
        },
        "memory": {
            "rss_mb_idle_before": idle_mb,
            "rss_mb_start_end_peak": [samples[0].rss_mb, samples[-1].rss_mb, max(s.rss_mb for s in samples)],
            "slope_mb_per_min_after_first_fifth": slope_mb_per_min(steady),
            "minutes_fitted": round((steady[-1].t - steady[0].t) / 60.0, 1) if steady else 0.0,
            "rss_mb_idle_after": idle_after,
        },
        "latency": {
            "baseline_response_ms": dist(
                [float(t["response_ms"]) for t in base["turns"] if t.get("response_ms")]
            ),
            "soak_response_ms": dist(
                [float(t["response_ms"]) for t in records["turns"] if t.get("response_ms")]
            ),
            "per_minute": per_minute(records["turns"], t0, base_p95),
        },
        "playout": playout(calls),
        "service_sampled": summary(samples),
        "samples": as_rows(samples),
    }


def per_minute(turns: list[dict[str, Any]], t0: float, base_p95: float | None) -> list[dict[str, Any]]:
    """Response latency per minute of the soak (by when the question was asked), with the p95 as a
    ratio to the single-call baseline's."""
    minutes: dict[int, list[float]] = {}
    for t in turns:
        if t.get("response_ms") is not None:
            minutes.setdefault(int((t["sent_at"] - t0) // 60), []).append(float(t["response_ms"]))
    rows = []
    for minute in sorted(minutes):
        values = minutes[minute]
        p95 = pct(values, 0.95)
        ratio = round(p95 / base_p95, 2) if p95 is not None and base_p95 else None
        rows.append(
            {"minute": minute, "turns": len(values), "p50": pct(values, 0.5), "p95": p95, "ratio_p95": ratio}
        )
    return rows


def summary_lines(f: dict[str, Any]) -> list[str]:
    """The headline figures."""
    c, m, lat, svc = f["calls"], f["memory"], f["latency"], f["service_sampled"]
    ratios = [row["ratio_p95"] for row in lat["per_minute"]]
    return [
        f"{c['placed']} calls over {f['_plan']['minutes']} min ({f['_plan']['lanes']} at once): "
        f"{c['errors']} errors, {c['recorded']} recorded, store {c['store_total_vs_placed'][0]}/"
        f"{c['store_total_vs_placed'][1]}, sessions left {c['sessions_left_after']}",
        f"RSS MB start/end/peak {m['rss_mb_start_end_peak']}, slope "
        f"{m['slope_mb_per_min_after_first_fifth']} MB/min over the last {m['minutes_fitted']} min, "
        f"idle before/after {m['rss_mb_idle_before']}/{m['rss_mb_idle_after']}",
        f"response ms p50/p95 {lat['soak_response_ms']['p50']}/{lat['soak_response_ms']['p95']} vs single "
        f"calls {lat['baseline_response_ms']['p50']}/{lat['baseline_response_ms']['p95']}; p95 ratio per "
        f"minute {ratios}",
        f"late chunks {f['playout']['late_chunks']}/{f['playout']['chunks']}; loop lag p99 max "
        f"{svc.get('loop_lag_p99_ms_max')} ms; service CPU {svc.get('service_cpu_frac_of_machine')} of the "
        f"machine, machine busy {svc.get('machine_busy_frac')}, load avg {svc.get('load_avg_1m_min_max')}",
        f"service log: {f['service']['log_error_lines']} error lines",
    ]
