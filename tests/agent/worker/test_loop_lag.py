"""The loop-lag monitor sees a blocked loop (and so would catch model work on it)."""

from __future__ import annotations

import asyncio
import time

from agent.worker.loop_lag import LoopLagMonitor


async def test_a_blocked_loop_shows_as_lag() -> None:
    monitor = LoopLagMonitor(interval_s=0.01)
    monitor.start()
    await asyncio.sleep(0.05)
    time.sleep(0.12)  # noqa: ASYNC251 - on purpose: what a model call on the event loop would do
    await asyncio.sleep(0.05)
    await monitor.stop()
    summary = monitor.summary()
    assert summary["max"] >= 90 and summary["p50"] < 20
    monitor.reset()
    assert monitor.summary() == {"p50": 0.0, "p99": 0.0, "max": 0.0}
