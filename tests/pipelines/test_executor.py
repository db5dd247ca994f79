"""The shared model executor: work runs off the loop, is bounded, counted, and cancellable while queued."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pipelines.executor import ModelExecutor


@pytest.fixture
async def executor() -> AsyncIterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=1, name="test-models")
    yield pool
    pool.shutdown()


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


async def test_runs_on_a_pool_thread_and_returns_the_result(executor: ModelExecutor) -> None:
    def where(x: int, y: int) -> tuple[str, int]:
        return threading.current_thread().name, x + y

    name, total = await executor.run(where, 2, 3)
    assert total == 5
    assert name.startswith("test-models")


async def test_exceptions_reach_the_caller(executor: ModelExecutor) -> None:
    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await executor.run(fail)
    assert executor.busy == 0 and executor.queue_depth == 0


async def test_loop_keeps_running_while_a_model_blocks(executor: ModelExecutor) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    await executor.run(time.sleep, 0.2)
    task.cancel()
    assert ticks >= 10  # a blocked loop would have ticked once


async def test_counts_queued_and_busy_jobs_and_drops_cancelled_queued_work(executor: ModelExecutor) -> None:
    release = threading.Event()
    ran: list[str] = []

    def job(label: str) -> str:
        release.wait(5)
        ran.append(label)
        return label

    first = asyncio.create_task(executor.run(job, "first"))
    second = asyncio.create_task(executor.run(job, "second"))
    third = asyncio.create_task(executor.run(job, "third"))
    await wait_until(lambda: executor.busy == 1 and executor.queue_depth == 2)

    second.cancel()  # barge-in: queued work is dropped, never started
    await wait_until(lambda: executor.queue_depth == 1)
    release.set()
    assert await first == "first"
    assert await third == "third"
    assert ran == ["first", "third"]
    assert second.cancelled()
    assert executor.busy == 0 and executor.queue_depth == 0


async def test_shutdown_refuses_new_work() -> None:
    pool = ModelExecutor(max_workers=2)
    assert await pool.run(sum, [1, 2]) == 3
    pool.shutdown()
    with pytest.raises(RuntimeError):
        await pool.run(sum, [1, 2])
    assert pool.queue_depth == 0


def test_rejects_an_empty_pool() -> None:
    with pytest.raises(ValueError):
        ModelExecutor(max_workers=0)
