"""RecordWriter: the process's writes of call records, kept (in order, per call) while the store is down.

A call writes its record as it happens. Each write goes to its call's lane and is applied at once; the
caller's task waits for it as before, so a record read right after a write sees it. When the store
cannot be reached (PostgreSQL restarting or failing over, a locked SQLite file, a network cut), the
write is kept instead of lost: the lane retries it with backoff (0.25 s doubling to 5 s) and the
writes queued behind it follow in their order, so a call's turns, events and final state all land
once the store is back. The call never waits for that: once its lane is failing, writes return at
once, and a write the store leaves hanging is waited for at most `FIRST_WAIT_S` (then retried after
`ATTEMPT_TIMEOUT_S`). A write the store refuses (a constraint, a bad value) is logged and dropped: a
retry could not fix it. The buffer is bounded (`MAX_PENDING` writes per process; past it new writes
are dropped and counted). At shutdown the runtime flushes what is pending for a few seconds.

`pending`, `written_late` and `dropped` feed /metrics (`hotline_record_writes_*`), `failed_attempts`
`hotline_store_write_failures_total`, and `waiting_calls` with `last_error` the degraded state of /healthz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import exc as sa

from agent.records.store import Store

log = logging.getLogger(__name__)

MAX_PENDING = 20_000
"""Writes kept per process while the store is down (a 5 s outage of 100 calls holds a few thousand)."""
FIRST_WAIT_S = 1.0
"""How long a call waits for a write that neither succeeds nor fails (a hung connection)."""
ATTEMPT_TIMEOUT_S = 5.0
"""A single attempt taking longer is abandoned and retried."""
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 5.0

Write = Callable[[], Awaitable[object]]
"""Makes one attempt of a write (a fresh coroutine each time: a write may be tried again)."""


def store_unreachable(exc: BaseException) -> bool:
    """A failure that a later retry may not see: the connection, not the write, is at fault."""
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.TimeoutError | OSError | TimeoutError)


@dataclass
class _Pending:
    attempt: Write
    what: str
    tried: asyncio.Future[None]
    """Done after the first attempt, whatever its outcome: the writer stops waiting then."""
    late: bool = False


@dataclass
class _Lane:
    """One call's writes not yet done, in order; `failing` while the store does not answer."""

    queue: deque[_Pending] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    failing: bool = False
    failing_since: float = 0.0


class RecordWriter:
    """Applies call record writes in order per call, buffering them while the store is unreachable."""

    def __init__(self, store: Store, *, limit: int = MAX_PENDING) -> None:
        self.store = store
        self.limit = limit
        self._lanes: dict[str, _Lane] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.pending = 0
        """Writes accepted and not yet done (in flight or waiting for the store)."""
        self.written_late = 0
        """Writes that waited for the store and were written after it came back."""
        self.dropped = 0
        """Writes given up: refused by the store, over the limit, or still pending at shutdown."""
        self.failed_attempts = 0
        """Attempts that failed because the store could not be reached or written (each retry counts)."""
        self.last_error: str | None = None
        """The latest such failure, for /healthz."""

    @property
    def waiting_calls(self) -> int:
        """Calls with writes waiting for the store."""
        return sum(1 for lane in self._lanes.values() if lane.failing)

    async def write(self, key: str, attempt: Write, what: str) -> None:
        """Apply a write of call `key` after its earlier ones; wait for it unless the store is down."""
        if self.pending >= self.limit:
            self.dropped += 1
            log.error("call %s: %d record writes already pending; %s dropped", key, self.pending, what)
            return
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        item = _Pending(attempt, what, asyncio.get_running_loop().create_future(), late=lane.failing)
        lane.queue.append(item)
        self.pending += 1
        self._idle.clear()
        if lane.task is None:
            lane.task = asyncio.create_task(self._drain(key, lane), name=f"record writes {key}")
        if lane.failing or self.waiting_calls:
            return  # kept in order; the call goes on (a store already failing others is not waited for)
        # asyncio.wait never cancels `tried`: a cancelled caller (barge-in) still gets its write done.
        done, _ = await asyncio.wait({item.tried}, timeout=FIRST_WAIT_S)
        if not done and not lane.failing:
            lane.failing, lane.failing_since = True, time.monotonic()
            log.warning("call %s: the store is not answering; record writes are kept and retried", key)

    async def _drain(self, key: str, lane: _Lane) -> None:
        delay = RETRY_FIRST_S
        try:
            while lane.queue:
                item = lane.queue[0]
                try:
                    async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                        await item.attempt()
                except Exception as exc:
                    if store_unreachable(exc):
                        self.failed_attempts += 1
                        self.last_error = _short(exc)
                        if not lane.failing:
                            lane.failing, lane.failing_since = True, time.monotonic()
                            log.warning(
                                "call %s: the store is unreachable (%s); %d record writes kept, retrying",
                                key, _short(exc), self.pending,
                            )  # fmt: skip
                        for queued in lane.queue:
                            queued.late = True
                        _settle(item.tried)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, RETRY_MAX_S)
                        continue
                    self.dropped += 1
                    log.exception("call %s: the store refused a record write (%s); dropped", key, item.what)
                else:
                    if item.late:
                        self.written_late += 1
                    if lane.failing:
                        lane.failing = False
                        log.warning(
                            "call %s: the store is back after %.1f s; writing the %d kept record writes",
                            key, time.monotonic() - lane.failing_since, len(lane.queue),
                        )  # fmt: skip
                    delay = RETRY_FIRST_S
                lane.queue.popleft()
                self.pending -= 1
                _settle(item.tried)
        finally:
            lane.task = None
            if not lane.queue and self._lanes.get(key) is lane:
                del self._lanes[key]
            if not self._lanes:
                self._idle.set()

    async def flush(self, timeout_s: float) -> int:
        """Wait (up to `timeout_s`) for every pending write; then give up on the rest. Returns how many
        writes were lost."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        lost = self.pending
        if lost:
            log.error(
                "%d record writes of %d calls could not be written before shutdown: lost",
                lost, len(self._lanes),
            )  # fmt: skip
        for lane in list(self._lanes.values()):
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            for item in lane.queue:
                _settle(item.tried)
        self._lanes.clear()
        self.dropped += lost
        self.pending = 0
        self._idle.set()
        return lost


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:200]
