"""Event-loop lag: how late a 50 ms timer fires. Proves model work never blocks the loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class LoopLagMonitor:
    """Samples the loop's lag every `interval_s`; keeps the last minute of samples."""

    def __init__(self, interval_s: float = 0.05, keep: int = 1200) -> None:
        self.interval_s = interval_s
        self.samples: deque[float] = deque(maxlen=keep)  # milliseconds late
        self.max_ms = 0.0  # since the last reset
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sampling in the running loop."""
        self._task = asyncio.create_task(self._run(), name="loop lag monitor")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reset(self) -> None:
        """Start a new max (benchmarks reset before a run)."""
        self.max_ms = 0.0
        self.samples.clear()

    def summary(self) -> dict[str, float]:
        """p50, p99 and max lag in milliseconds over the kept samples."""
        if not self.samples:
            return {"p50": 0.0, "p99": 0.0, "max": round(self.max_ms, 1)}
        ordered = sorted(self.samples)

        def pick(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

        return {"p50": pick(0.5), "p99": pick(0.99), "max": round(self.max_ms, 1)}

    async def _run(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            late = max(0.0, (time.perf_counter() - before - self.interval_s) * 1000)
            self.samples.append(late)
            self.max_ms = max(self.max_ms, late)
