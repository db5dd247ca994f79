"""What the service does while the load and soak benchmarks run: sampled over time from /proc and /healthz.

Each sample: resident memory, CPU seconds so far (service, and the whole machine: other people's work
shows there), live calls, the loop-lag monitor's p99 and max (it keeps the last minute), model queue
depth, the load average. `summary` reduces a window of samples; `slope_mb_per_min` fits memory growth.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from bench.pipeline_service import ServiceProcess, machine_busy

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class Sample:
    """The service at one moment (`t`: seconds since the monitor started)."""

    t: float
    rss_mb: float
    service_cpu_s: float
    machine_busy: float
    machine_total: float
    active_calls: int
    loop_lag_p99_ms: float
    loop_lag_max_ms: float
    queue_depth: int
    load_1m: float


class Monitor:
    """Samples `svc` every `interval_s` while the `async with` body runs."""

    def __init__(self, svc: ServiceProcess, api: httpx.AsyncClient, interval_s: float = 1.0) -> None:
        self.svc, self.api, self.interval_s = svc, api, interval_s
        self.samples: list[Sample] = []
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def sample(self) -> Sample:
        """Take one sample now (and keep it)."""
        health: dict[str, Any] = {}
        with contextlib.suppress(httpx.HTTPError, ValueError):
            health = (await self.api.get("/healthz")).json()
        lag = health.get("loop_lag_ms", {})
        busy, total = machine_busy()
        sample = Sample(
            t=round(time.monotonic() - self._t0, 2),
            rss_mb=round(self.svc.rss_mb(), 1),
            service_cpu_s=self.svc.cpu_s(),
            machine_busy=busy,
            machine_total=total,
            active_calls=int(health.get("active_calls", -1)),
            loop_lag_p99_ms=float(lag.get("p99", -1.0)),
            loop_lag_max_ms=float(lag.get("max", -1.0)),
            queue_depth=int(health.get("model_queue_depth", -1)),
            load_1m=round(os.getloadavg()[0], 2),
        )
        self.samples.append(sample)
        return sample

    async def __aenter__(self) -> Monitor:
        self._t0 = time.monotonic()
        await self.sample()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.sample()


def summary(samples: list[Sample]) -> dict[str, Any]:
    """CPU, memory, live calls, loop lag and queue over a window of samples (first to last)."""
    if len(samples) < 2:
        return {}
    first, last = samples[0], samples[-1]
    wall = max(last.t - first.t, 1e-9)
    service_cpu = last.service_cpu_s - first.service_cpu_s
    machine = (last.machine_busy - first.machine_busy) / max(last.machine_total - first.machine_total, 1.0)
    return {
        "wall_s": round(wall, 1),
        "service_cpu_s": round(service_cpu, 1),
        "service_cpu_frac_of_machine": round(service_cpu / wall / CORES, 3),
        "machine_busy_frac": round(machine, 3),
        "cores": CORES,
        "load_avg_1m_min_max": [min(s.load_1m for s in samples), max(s.load_1m for s in samples)],
        "rss_mb_start_peak_end": [first.rss_mb, max(s.rss_mb for s in samples), last.rss_mb],
        "active_calls_max": max(s.active_calls for s in samples),
        "loop_lag_p99_ms_max": max(s.loop_lag_p99_ms for s in samples),
        "loop_lag_max_ms": max(s.loop_lag_max_ms for s in samples),
        "model_queue_depth_max": max(s.queue_depth for s in samples),
    }


def slope_mb_per_min(samples: list[Sample]) -> float | None:
    """Least-squares growth of resident memory over the samples, in MB per minute."""
    if len(samples) < 3:
        return None
    t = np.array([s.t for s in samples]) / 60.0
    rss = np.array([s.rss_mb for s in samples])
    return round(float(np.polyfit(t, rss, 1)[0]), 2)


def as_rows(samples: list[Sample]) -> list[dict[str, Any]]:
    """Samples for the results file (CPU as seconds since the first sample)."""
    if not samples:
        return []
    cpu0 = samples[0].service_cpu_s
    rows = []
    for s in samples:
        row = asdict(s)
        row["service_cpu_s"] = round(s.service_cpu_s - cpu0, 1)
        del row["machine_busy"], row["machine_total"]
        rows.append(row)
    return rows
