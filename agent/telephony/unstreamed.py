"""Calls answered whose stream never connected: how they end, and the sweep that ends the expired ones.

answer_url leaves a call `answered` (outbound: `dialing`) until PIOPIY opens its stream. When the stream
never comes the call is closed, `abandoned` (inbound) or `unanswered` (outbound), by whichever comes
first: PIOPIY's `hangup` event (`hangup_before_stream`), its CDR (`cdr_before_stream`), or its stream
token expiring (`stream_never_connected`: nothing can open the stream any more). The sweep runs at
start-up and every `SWEEP_EVERY_S`, on every worker: each close is one conditional update, so a call
is closed once, and never one whose stream a worker claimed (agent/telephony/socket.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from agent.records.store import Store

log = logging.getLogger(__name__)

HANGUP_BEFORE_STREAM = "hangup_before_stream"
CDR_BEFORE_STREAM = "cdr_before_stream"
STREAM_NEVER_CONNECTED = "stream_never_connected"
SWEEP_EVERY_S = 60.0
"""How often a worker looks for calls whose stream token expired unused."""
DELIVERY_MEMORY_S = 86400.0
"""How long a PIOPIY event's delivery key is kept to recognize a retry (PIOPIY retries for minutes)."""

Counted = Callable[[str, str], None]
"""Counts a call that ended (bot, status) in the worker's metrics."""


async def close_unstreamed(store: Store, call_id: str, end_reason: str, counted: Counted) -> bool:
    """End the call if its stream never connected (PIOPIY says it is over); False when it had streamed
    or ended already."""
    closed = await store.close_unstreamed(call_id, end_reason=end_reason, ended_at=time.time())
    if closed is None:
        return False
    bot, status = closed
    counted(bot, status)
    log.info("call %s ended before its stream connected: %s (%s)", call_id, status, end_reason)
    return True


async def sweep(store: Store, ttl_s: float, counted: Counted, *, now: float | None = None) -> int:
    """End the calls whose stream token expired unused, and forget old event deliveries; returns how
    many calls were ended."""
    now = time.time() if now is None else now
    ended = await store.expire_unstreamed(ttl_s=ttl_s, now=now, end_reason=STREAM_NEVER_CONNECTED)
    for bot, status in ended:
        counted(bot, status)
    if ended:
        log.warning("%d calls were answered but their stream never connected: ended", len(ended))
    await store.forget_deliveries(now - DELIVERY_MEMORY_S)
    return len(ended)


async def sweep_loop(store: Store, ttl_s: float, counted: Counted, *, every_s: float = SWEEP_EVERY_S) -> None:
    """Sweep now, then every `every_s` seconds until cancelled; a failed sweep (the store is down) is
    logged and the next one tries again."""
    while True:
        try:
            await sweep(store, ttl_s, counted)
        except Exception:
            log.exception("could not end the calls whose stream never connected; retrying in %.0f s", every_s)
        await asyncio.sleep(every_s)


def start_sweep(store: Store, ttl_s: float, counted: Counted) -> asyncio.Task[None]:
    """The worker's sweep task."""
    return asyncio.create_task(sweep_loop(store, ttl_s, counted), name="unstreamed-calls")


async def stop_sweep(task: asyncio.Task[None] | None) -> None:
    """Cancel the sweep task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
