"""The one bounded thread pool that runs model inference (ASR, TTS) for every call in the process.

Model calls block for tens to hundreds of milliseconds; running them here keeps the event loop free to
move audio for all the other calls. The pool is bounded so that a burst of calls queues work instead
of oversubscribing the CPU, and `queue_depth` shows when that happens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class ModelExecutor:
    """A bounded thread pool for blocking model work, awaited from asyncio.

    Cancelling the awaiting task drops the job if it has not started yet (barge-in makes queued
    synthesis pointless); a job already running finishes and its result is discarded, because a
    thread cannot be interrupted.
    """

    def __init__(self, max_workers: int = 2, name: str = "models") -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.name = name
        self.max_workers = max_workers
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._queued = 0
        self._busy = 0

    @property
    def queue_depth(self) -> int:
        """Jobs submitted but not started yet."""
        with self._lock:
            return self._queued

    @property
    def busy(self) -> int:
        """Jobs running right now (at most `max_workers`)."""
        with self._lock:
            return self._busy

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run `fn(*args)` on the pool and await its result without blocking the event loop.

        For keyword arguments, pass a `functools.partial`.
        """
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _submit(self, fn: Callable[[*Ts], T], *args: *Ts) -> Future[T]:
        def job() -> T:
            with self._lock:
                self._queued -= 1
                self._busy += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self._busy -= 1

        with self._lock:
            self._queued += 1
        try:
            future = self._pool.submit(job)
        except RuntimeError:  # shut down: the job never entered the queue
            with self._lock:
                self._queued -= 1
            raise
        # Only a job that never started can be cancelled, so it leaves the queue count here instead.
        future.add_done_callback(self._forget_if_cancelled)
        return future

    def _forget_if_cancelled(self, future: Future[T]) -> None:
        if future.cancelled():
            with self._lock:
                self._queued -= 1

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting work, drop queued jobs, and (by default) wait for running ones to finish."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
