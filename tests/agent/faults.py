"""Helpers of the fault tests: outage lengths, looking inside a running service, and leak checks.

`HOTLINE_FAULTS=full` runs the faults at their real length (the database away for 5 s, Redis for 5 s);
by default (CI) they are shorter versions of the same scenarios.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import httpx

from agent.worker.runtime import Runtime
from tests.agent.conftest import Service

T = TypeVar("T")

FULL = os.environ.get("HOTLINE_FAULTS") == "full"
OUTAGE_S = 5.0 if FULL else 2.0
"""How long the database or Redis stays away."""


def runtime_of(service: Service) -> Runtime:
    assert service.app is not None, "use running_service() (it keeps the app)"
    runtime: Runtime = service.app.state.runtime
    return runtime


def loop_of(runtime: Runtime) -> asyncio.AbstractEventLoop:
    task = runtime.loop_lag._task
    assert task is not None
    return task.get_loop()


async def in_service(runtime: Runtime, make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on the service's own loop (its thread) and wait for the result here."""
    future: Future[T] = asyncio.run_coroutine_threadsafe(_call(make), loop_of(runtime))
    return await asyncio.wrap_future(future)


async def _call(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


async def task_names(runtime: Runtime) -> list[str]:
    """The names of the tasks alive on the service's loop."""

    async def names() -> list[str]:
        return sorted(t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task())

    return await in_service(runtime, names)


async def eventually(check: Callable[[], Awaitable[bool] | bool], what: str, timeout: float = 15.0) -> None:
    """Wait until `check()` holds (a generous deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


async def assert_call_left_nothing(runtime: Runtime, call_id: str, baseline: list[str]) -> None:
    """After a call: no session, no record writes pending, no task of the call, no more tasks than
    before it (the same loop, idle), and no CallSession object left in memory."""
    await eventually(lambda: call_id not in runtime.calls.sessions, f"call {call_id} unregistered")
    await eventually(lambda: runtime.writer.pending == 0, "record writes done")

    async def settled() -> bool:
        names = await task_names(runtime)
        return len(names) <= len(baseline) and not [n for n in names if call_id in n]

    await eventually(settled, f"the tasks of call {call_id} ended (before: {baseline})")
    assert not runtime.background, "notifications still running"
    assert live_sessions() == [], "a CallSession outlived its call"


def live_sessions() -> list[Any]:
    """CallSession objects still in memory (after a full collection)."""
    from agent.call.session import CallSession

    _freeze_captured_logs()
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, CallSession)]


def _freeze_captured_logs() -> None:
    """pytest keeps every log record of a test, with its arguments and traceback (and through them the
    call's objects): turn the kept records into plain text, as any real log handler does at once."""
    for handler in logging.getLogger().handlers:
        for record in getattr(handler, "records", []):
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args, record.exc_info = record.getMessage(), None, None


def rss_bytes() -> int:
    """This process's resident memory."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def metric(service: Service, name: str) -> float:
    """One unlabelled value from /metrics."""
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def events_of(record: dict[str, Any], source: str, status: str) -> list[dict[str, Any]]:
    return [e["payload"] for e in record["events"] if (e["source"], e["status"]) == (source, status)]
