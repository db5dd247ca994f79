"""The shared model executor: work runs off the loop, is bounded, counted, cancellable while queued, and
shared fairly between calls (one job at a time per call, turns in round robin, endpoints first)."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest

from pipelines.executor import JobPriority, ModelExecutor, Urgency


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


# ------------------------------------------------------------------------------------ fair share

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("test_owner", default=None)


def fair_pool(workers: int) -> ModelExecutor:
    return ModelExecutor(max_workers=workers, name="test-fair", owner_of=_owner.get)


def submit(
    pool: ModelExecutor, owner: str, fn: Callable[[], str], urgency: Urgency | None = None
) -> asyncio.Task[str]:
    """`fn` on the pool as `owner`'s job (in `urgency`'s context if given), from a task of its own."""
    context = urgency.context() if urgency is not None else contextvars.copy_context()
    context.run(_owner.set, owner)
    return asyncio.get_running_loop().create_task(pool.run(fn), context=context)


class Gates:
    """Jobs that record when they start, each blocking until released by its label (or all at once)."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._all = threading.Event()
        self.started: list[str] = []
        self._lock = threading.Lock()

    def job(self, owner: str, label: str, *, blocks: bool = True) -> Callable[[], str]:
        event = self._events.setdefault(label, threading.Event())

        def run() -> str:
            with self._lock:
                self.started.append(label)
            while blocks and not (event.wait(0.01) or self._all.is_set()):
                pass
            return label

        return run

    def release(self, label: str) -> None:
        self._events[label].set()

    def release_all(self) -> None:
        self._all.set()


async def test_while_another_call_waits_a_flooding_call_gets_no_second_worker() -> None:
    """A call alone may use the whole pool (no worker idles); once another call waits, each worker that
    frees goes to the waiting call, and the flood keeps at most one worker while the other call has work."""
    pool, gates = fair_pool(2), Gates()
    try:
        flood = [submit(pool, "flood", gates.job("flood", f"f{i}")) for i in range(30)]
        await wait_until(lambda: pool.busy == 2 and pool.queue_depth == 28)
        assert gates.started == ["f0", "f1"]  # nobody else wants a worker: both work for the flood
        normal = [submit(pool, "normal", gates.job("normal", f"n{i}")) for i in range(2)]
        await wait_until(lambda: pool.queue_depth == 30)
        gates.release("f0")  # the first worker to free goes to the waiting call, not to f2
        await wait_until(lambda: gates.started[-1] == "n0")
        gates.release("f1")  # the flood's own next job: the normal call runs n0 and has n1 waiting
        await wait_until(lambda: gates.started[-1] == "f2")
        gates.release("n0")  # n1 next, while the flood's f2 still runs: one worker each
        await wait_until(lambda: gates.started[-1] == "n1")
        assert gates.started == ["f0", "f1", "n0", "f2", "n1"]
        gates.release_all()
        assert await asyncio.gather(*flood) == [f"f{i}" for i in range(30)]  # its own order is kept
        assert await asyncio.gather(*normal) == ["n0", "n1"]
        assert pool.busy == 0 and pool.queue_depth == 0
    finally:
        gates.release_all()
        pool.shutdown()


async def test_calls_take_turns_on_a_busy_pool() -> None:
    pool, gates = fair_pool(1), Gates()
    try:
        blocker = submit(pool, "other", gates.job("other", "blocker"))
        await wait_until(lambda: pool.busy == 1)
        flood = [submit(pool, "flood", gates.job("flood", f"f{i}", blocks=False)) for i in range(3)]
        await wait_until(lambda: pool.queue_depth == 3)
        normal = submit(pool, "normal", gates.job("normal", "n", blocks=False))
        await wait_until(lambda: pool.queue_depth == 4)
        gates.release_all()
        await asyncio.gather(blocker, normal, *flood)
        # First come first served would run all of the flood first (f0 f1 f2 n).
        assert gates.started == ["blocker", "f0", "n", "f1", "f2"]
    finally:
        gates.release_all()
        pool.shutdown()


async def test_endpoint_jobs_go_before_speculative_ones() -> None:
    pool, gates = fair_pool(1), Gates()
    try:
        blocker = submit(pool, "other", gates.job("other", "blocker"))
        await wait_until(lambda: pool.busy == 1)
        jobs = [
            submit(
                pool, "a", gates.job("a", "a speculative", blocks=False), Urgency(JobPriority.SPECULATIVE)
            ),
            submit(
                pool, "b", gates.job("b", "b speculative", blocks=False), Urgency(JobPriority.SPECULATIVE)
            ),
            submit(pool, "c", gates.job("c", "c final", blocks=False)),
        ]
        await wait_until(lambda: pool.queue_depth == 3)
        gates.release_all()
        await asyncio.gather(blocker, *jobs)
        assert gates.started == ["blocker", "c final", "a speculative", "b speculative"]
    finally:
        gates.release_all()
        pool.shutdown()


async def test_a_queued_speculation_promoted_to_final_goes_first() -> None:
    pool, gates = fair_pool(1), Gates()
    try:
        blocker = submit(pool, "other", gates.job("other", "blocker"))
        await wait_until(lambda: pool.busy == 1)
        guess_a, guess_b = Urgency(JobPriority.SPECULATIVE), Urgency(JobPriority.SPECULATIVE)
        jobs = [
            submit(pool, "a", gates.job("a", "a", blocks=False), guess_a),
            submit(pool, "b", gates.job("b", "b", blocks=False), guess_b),
        ]
        await wait_until(lambda: pool.queue_depth == 2)
        guess_b.promote()  # b's turn ended on the speculated audio: its transcript is awaited now
        gates.release_all()
        await asyncio.gather(blocker, *jobs)
        assert gates.started == ["blocker", "b", "a"]
    finally:
        gates.release_all()
        pool.shutdown()


async def test_a_cancelled_job_frees_its_calls_place() -> None:
    pool, gates = fair_pool(1), Gates()
    try:
        blocker = submit(pool, "other", gates.job("other", "blocker"))
        await wait_until(lambda: pool.busy == 1)
        dropped = submit(pool, "a", gates.job("a", "dropped", blocks=False))
        kept = submit(pool, "a", gates.job("a", "kept", blocks=False))
        await wait_until(lambda: pool.queue_depth == 2)
        dropped.cancel()  # barge-in: the call's queued synthesis is dropped
        await wait_until(lambda: pool.queue_depth == 1)
        gates.release_all()
        assert await kept == "kept"
        await blocker
        assert gates.started == ["blocker", "kept"] and dropped.cancelled()
    finally:
        gates.release_all()
        pool.shutdown()
