"""Concurrency and memory: N simultaneous scripted calls against one service process, and what it costs.

While a level runs, `Sampler` reads the service's resident memory from /proc and polls /healthz (loop
lag, model queue depth) every half second; CPU time of the service, of the bench process (the simulated
callers) and of the whole machine (other people's work shows there) is taken before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from bench.pipeline_calls import Conversation, converse, playout_gaps, questions_for
from bench.pipeline_service import SUPPORT_NUMBER, WEBHOOK_SECRET, ServiceProcess, machine_busy
from bench.pipeline_stats import latency_stats, pct
from testkit.simulator import PiopiySimulator

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Sampler:
    """Samples a service while a phase runs; `summary()` after the `async with`."""

    def __init__(self, svc: ServiceProcess, api: httpx.AsyncClient, interval_s: float = 0.5) -> None:
        self.svc, self.api, self.interval_s = svc, api, interval_s
        self.rss: list[float] = []
        self.queue: list[int] = []
        self.rtt_ms: list[float] = []
        self.health_before: dict[str, Any] = {}
        self.health_after: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._start: dict[str, Any] = {}
        self._end: dict[str, Any] = {}

    async def _health(self) -> dict[str, Any]:
        started = time.perf_counter()
        health: dict[str, Any] = (await self.api.get("/healthz")).json()
        self.rtt_ms.append((time.perf_counter() - started) * 1000)
        return health

    def _mark(self) -> dict[str, Any]:
        times = os.times()
        return {
            "wall": time.monotonic(),
            "service_cpu": self.svc.cpu_s(),
            "bench_cpu": times.user + times.system,
            "machine": machine_busy(),
            "load": os.getloadavg(),
        }

    async def __aenter__(self) -> Sampler:
        self.health_before = await self._health()
        self._start = self._mark()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._end = self._mark()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.health_after = await self._health()

    async def _run(self) -> None:
        while True:
            self.rss.append(self.svc.rss_mb())
            with contextlib.suppress(httpx.HTTPError):
                self.queue.append(int((await self._health())["model_queue_depth"]))
            await asyncio.sleep(self.interval_s)

    def summary(self) -> dict[str, Any]:
        """CPU, memory, loop lag and queue depth over the phase."""
        s, e = self._start, self._end
        wall = e["wall"] - s["wall"]
        busy = (e["machine"][0] - s["machine"][0]) / max(e["machine"][1] - s["machine"][1], 1.0)
        lag_before, lag_after = self.health_before["loop_lag_ms"], self.health_after["loop_lag_ms"]
        return {
            "wall_s": round(wall, 1),
            "service_cpu_s": round(e["service_cpu"] - s["service_cpu"], 2),
            "service_cpu_frac": round((e["service_cpu"] - s["service_cpu"]) / wall / CORES, 3),
            "bench_callers_cpu_frac": round((e["bench_cpu"] - s["bench_cpu"]) / wall / CORES, 3),
            "machine_busy_frac": round(busy, 3),
            "load_avg_1m": [round(s["load"][0], 2), round(e["load"][0], 2)],
            "rss_mb_peak": round(max(self.rss, default=0.0), 1),
            "rss_mb_mean": round(statistics.fmean(self.rss), 1) if self.rss else None,
            "model_queue_depth_max": max(self.queue, default=0),
            "model_queue_depth_mean": round(statistics.fmean(self.queue), 2) if self.queue else None,
            # The monitor keeps a running max and the last minute of samples; it cannot be reset from
            # outside, so the max *during* the phase is known only when it rose.
            "loop_lag_max_ms_before_after": [lag_before["max"], lag_after["max"]],
            "loop_lag_max_ms_during": lag_after["max"] if lag_after["max"] > lag_before["max"] else None,
            "loop_lag_p99_ms_last_minute": lag_after["p99"],
            "healthz_rtt_ms": {"p50": pct(self.rtt_ms, 0.5), "max": round(max(self.rtt_ms, default=0), 1)},
        }


async def idle_memory(svc: ServiceProcess, settle_s: float = 2.0) -> dict[str, Any]:
    """Resident memory with the models loaded and no call (median of a few readings)."""
    await asyncio.sleep(settle_s)
    readings = []
    for _ in range(5):
        readings.append(svc.rss_mb())
        await asyncio.sleep(0.2)
    return {"rss_mb": round(statistics.median(readings), 1), "startup_s": round(svc.startup_s, 1)}


async def concurrency_level(
    svc: ServiceProcess, n: int, *, questions: int, rounds: int, stagger_s: float
) -> tuple[dict[str, Any], list[Conversation]]:
    """`rounds` times, `n` calls at once (starts spread over `stagger_s`), each asking `questions`."""
    sim = PiopiySimulator(svc.url, webhook_secret=WEBHOOK_SECRET)
    convs: list[Conversation] = []
    async with svc.client() as api, Sampler(svc, api) as sampler:
        for r in range(rounds):
            convs += await asyncio.gather(
                *(
                    converse(
                        sim,
                        api,
                        SUPPORT_NUMBER,
                        questions_for(r * n + i, questions),
                        arm=f"n{n}",
                        start_delay_s=i * stagger_s / n,
                    )
                    for i in range(n)
                )
            )
    turns = [t for c in convs for t in c.turns()]
    gaps = [playout_gaps(c) for c in convs]
    chunks, late = sum(g["chunks"] for g in gaps), sum(g["late"] for g in gaps)
    level = {
        "calls": n,
        "rounds": rounds,
        "questions_asked": sum(len(c.asked) for c in convs),
        **latency_stats(turns),
        "playout": {
            "chunks": chunks,
            "late_chunks": late,
            "late_rate": round(late / max(chunks, 1), 4),
            "gap_ms_total": sum(g["gap_ms"] for g in gaps),
            "worst_gap_ms": max((g["worst_ms"] for g in gaps), default=0),
        },
        "errors": [c.error for c in convs if c.error][:3],
        **sampler.summary(),
    }
    level["service_cpu_s_per_turn"] = round(level["service_cpu_s"] / max(len(turns), 1), 2)
    return level, convs


def knee(levels: list[dict[str, Any]], factor: float = 1.5, late_rate: float = 0.01) -> dict[str, Any]:
    """The largest N still within `factor` × the single-call p95 response and `late_rate` late chunks,
    and what the first level past it ran out of."""
    base = levels[0]["response_ms"]["p95"] or 1.0
    ok = [
        lv
        for lv in levels
        if (lv["response_ms"]["p95"] or 0) <= factor * base and lv["playout"]["late_rate"] <= late_rate
    ]
    capacity = max((lv["calls"] for lv in ok), default=0)
    over = next((lv for lv in levels if lv["calls"] > capacity), None)
    limit = "not reached"
    if over is not None:
        signs = []
        if over["service_cpu_frac"] >= 0.8 or over["machine_busy_frac"] >= 0.8:
            others = (
                over["machine_busy_frac"] - over["service_cpu_frac"] - over.get("bench_callers_cpu_frac", 0)
            )
            signs.append(
                f"CPU: machine {over['machine_busy_frac']:.0%} busy ({CORES} cores): service "
                f"{over['service_cpu_frac']:.0%}, other processes {max(others, 0):.0%}"
            )
        if over["model_queue_depth_max"] > 0:
            signs.append(f"model pool queue up to {over['model_queue_depth_max']} jobs")
        if over["asr_ms"]["p95"] and levels[0]["asr_ms"]["p95"]:
            signs.append(f"ASR p95 {levels[0]['asr_ms']['p95']:.0f} → {over['asr_ms']['p95']:.0f} ms")
        if (over["loop_lag_max_ms_during"] or 0) > 100:
            signs.append(f"event-loop lag up to {over['loop_lag_max_ms_during']} ms")
        limit = "; ".join(signs) or "latency rose without a saturated resource in view"
    return {
        "rule": f"p95 response <= {factor} x the 1-call p95 and late chunks <= {late_rate:.0%}",
        "calls_within": capacity,
        "first_level_past": over["calls"] if over else None,
        "limited_by": limit,
    }


def memory_per_call(idle_mb: float, levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Peak resident memory per level against N. The first call also pays one-off costs (the inference
    runtimes' buffers and allocator arenas grow on first use), so the cost of one more call is the
    least-squares slope over the levels, without the idle point."""
    n = np.array([lv["calls"] for lv in levels], dtype=float)
    rss = np.array([lv["rss_mb_peak"] for lv in levels], dtype=float)
    slope = float(np.polyfit(n, rss, 1)[0]) if len(n) > 1 else None
    steps = {
        f"{int(a)}->{int(b)}": round(float((rb - ra) / (b - a)), 1)
        for a, b, ra, rb in zip(n, n[1:], rss, rss[1:], strict=False)
    }
    return {
        "rss_mb_idle_models_loaded": idle_mb,
        "rss_mb_peak_by_calls": {str(int(k)): float(v) for k, v in zip(n, rss, strict=True)},
        "first_call_warmup_mb": round(float(rss[0]) - idle_mb, 1) if len(rss) else None,
        "mb_per_additional_call": round(slope, 1) if slope is not None else None,
        "mb_per_call_between_levels": steps,
    }
