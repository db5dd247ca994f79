"""The one bounded thread pool that runs model inference (ASR, TTS) for every call, shared fairly by calls.

Model calls block for tens to hundreds of milliseconds; running them here keeps the event loop free to
move audio for all the other calls. The pool is bounded so that a burst of calls queues work instead
of oversubscribing the CPU, and `queue_depth` shows when that happens.

Fair share. Each job belongs to an owner (a call: `owner_of` reads it from the submitting task's
context) and has a priority (`JobPriority`). A free worker takes a job of an owner with nothing
running first, so while other calls wait a call runs one job at a time, however much work it queues;
among those, by priority (an endpoint's transcript or speech to play before a speculative transcript),
then from the owner served least recently (round robin), then oldest first. Only a worker that would
otherwise sit idle takes a second job of a busy owner: a call alone keeps the pool's full speed (a
stale speculation still running never delays its turn's next one), and a call arriving then waits for
one job at most. Jobs without an owner (start-up warm-up) are not limited.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class JobPriority(IntEnum):
    """Which waiting job a free worker takes first (lower first)."""

    URGENT = 0
    """Someone is waiting on it now: the transcript of a turn that ended, speech to play."""
    SPECULATIVE = 1
    """Work that may be thrown away: a transcript guessed at a pause, before the turn ends."""


class Urgency:
    """The priority of the model jobs submitted in a context. Mutable: a speculative transcript that
    turns out to be the turn's final one is promoted while it still waits for a worker."""

    def __init__(self, priority: JobPriority = JobPriority.URGENT) -> None:
        self.priority = priority

    def context(self) -> contextvars.Context:
        """A copy of the current context whose model jobs have this urgency: pass it to
        `asyncio.create_task(..., context=...)`."""
        context = contextvars.copy_context()
        context.run(_urgency.set, self)
        return context

    def promote(self) -> None:
        """Someone waits on this work now: its jobs (queued or to come) are urgent."""
        self.priority = JobPriority.URGENT


_urgency: contextvars.ContextVar[Urgency | None] = contextvars.ContextVar("model_job_urgency", default=None)
"""The urgency of the jobs submitted in this context; None: urgent."""


def _no_owner() -> Hashable | None:
    return None


def _ran() -> None:
    return None


@dataclass(eq=False)
class _Job:
    run: Callable[[], Any]
    future: Future[Any]
    owner: Hashable | None
    urgency: Urgency | None
    seq: int

    @property
    def priority(self) -> JobPriority:
        return JobPriority.URGENT if self.urgency is None else self.urgency.priority


@dataclass
class _Owner:
    """An owner with work queued or running; forgotten once it has neither."""

    waiting: int = 0
    running: int = 0
    served: int = -1  # when it last started a job (a count of starts); -1: not since it was idle


@dataclass
class _Schedule:
    """The waiting jobs and who is running what; guarded by `ModelExecutor._cond`."""

    waiting: list[_Job] = field(default_factory=list)
    owners: dict[Hashable, _Owner] = field(default_factory=dict)
    starts: itertools.count[int] = field(default_factory=itertools.count)

    def pick(self) -> _Job | None:
        """Remove and return the job a free worker runs next (see the module docstring), if any."""
        best = self._best(second_jobs=False) or self._best(second_jobs=True)
        if best is None:
            return None
        self.waiting.remove(best)
        if best.owner is not None:
            owner = self.owners[best.owner]
            owner.waiting -= 1
            owner.running += 1
            owner.served = next(self.starts)
        return best

    def _best(self, *, second_jobs: bool) -> _Job | None:
        """The first job by (priority, owner served least recently, age): among owners with nothing
        running, or (`second_jobs`: nobody else waits, the worker would idle) among those running one."""
        best: _Job | None = None
        best_key: tuple[int, int, int] | None = None
        for job in self.waiting:
            owner = self.owners.get(job.owner) if job.owner is not None else None
            if owner is not None and bool(owner.running) != second_jobs:
                continue
            key = (int(job.priority), owner.served if owner is not None else -1, job.seq)
            if best_key is None or key < best_key:
                best, best_key = job, key
        return best

    def add(self, job: _Job) -> None:
        self.waiting.append(job)
        if job.owner is not None:
            self.owners.setdefault(job.owner, _Owner()).waiting += 1

    def drop(self, job: _Job) -> bool:
        """Forget a job that never started (cancelled); False when it was not waiting."""
        if job not in self.waiting:
            return False
        self.waiting.remove(job)
        job.run = _ran
        if job.owner is not None:
            self.owners[job.owner].waiting -= 1
            self._forget_if_idle(job.owner)
        return True

    def finished(self, job: _Job) -> None:
        if job.owner is not None:
            self.owners[job.owner].running -= 1
            self._forget_if_idle(job.owner)

    def _forget_if_idle(self, key: Hashable) -> None:
        owner = self.owners[key]
        if owner.running == 0 and owner.waiting == 0:
            del self.owners[key]  # calls come and go: keep no state for those without work


class ModelExecutor:
    """A bounded pool of threads for blocking model work, awaited from asyncio, shared fairly by owner.

    Cancelling the awaiting task drops the job if it has not started yet (barge-in makes queued
    synthesis pointless); a job already running finishes and its result is discarded, because a
    thread cannot be interrupted.
    """

    def __init__(
        self,
        max_workers: int = 2,
        name: str = "models",
        *,
        owner_of: Callable[[], Hashable | None] = _no_owner,
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.name = name
        self.max_workers = max_workers
        self._owner_of = owner_of
        self._cond = threading.Condition()
        self._schedule = _Schedule()
        self._threads: list[threading.Thread] = []
        self._idle_threads = 0
        self._seq = itertools.count()
        self._busy = 0
        self._shutdown = False

    @property
    def queue_depth(self) -> int:
        """Jobs submitted but not started yet."""
        with self._cond:
            return len(self._schedule.waiting)

    @property
    def busy(self) -> int:
        """Jobs running right now (at most `max_workers`)."""
        with self._cond:
            return self._busy

    async def run(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        """Run `fn(*args)` on the pool and await its result without blocking the event loop.

        The job belongs to `owner_of()` and has the current context's `Urgency` (urgent unless run in
        the context of a speculative one). For keyword arguments, pass a `functools.partial`.
        """
        return await asyncio.wrap_future(self._submit(fn, *args))

    def _submit(self, fn: Callable[[*Ts], T], *args: *Ts) -> Future[T]:
        future: Future[T] = Future()
        job = _Job(lambda: fn(*args), future, self._owner_of(), _urgency.get(), next(self._seq))
        with self._cond:
            if self._shutdown:
                raise RuntimeError(f"model executor {self.name} is shut down")
            self._schedule.add(job)
            if self._idle_threads == 0 and len(self._threads) < self.max_workers:
                self._start_thread()
            self._cond.notify_all()
        future.add_done_callback(lambda _: self._forget_if_cancelled(job))
        return future

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._work,
            name=f"{self.name}_{len(self._threads)}",
            daemon=True,  # never holds exit up
        )
        self._threads.append(thread)
        thread.start()

    def _forget_if_cancelled(self, job: _Job) -> None:
        if job.future.cancelled():
            with self._cond:
                self._schedule.drop(job)

    def _work(self) -> None:
        while True:
            with self._cond:
                while (job := self._schedule.pick()) is None:
                    if self._shutdown:
                        return
                    self._idle_threads += 1
                    self._cond.wait()
                    self._idle_threads -= 1
                self._busy += 1
            started = job.future.set_running_or_notify_cancel()  # False: cancelled just after it was picked
            result: Any = None
            error: BaseException | None = None
            if started:
                try:
                    result = job.run()
                except BaseException as exc:
                    error = exc
            job.run = _ran  # its arguments (audio) go now, not when the job and its future are collected
            with self._cond:  # counted done before the result shows, so an awaiting caller sees it idle
                self._busy -= 1
                self._schedule.finished(job)
                self._cond.notify_all()  # the owner may run its next job now, on any worker
            if not started:
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
            del result, error  # not kept (a transcript, audio) while the worker waits for the next job

    def shutdown(self, wait: bool = True) -> None:
        """Stop accepting work, drop queued jobs, and (by default) wait for running ones to finish."""
        with self._cond:
            self._shutdown = True
            dropped = list(self._schedule.waiting)
            for job in dropped:
                self._schedule.drop(job)
            self._cond.notify_all()
        for job in dropped:
            job.future.cancel()  # its callback takes the lock: never call it holding the lock
        if wait:
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()
