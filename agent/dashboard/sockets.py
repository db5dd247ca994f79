"""The dashboard's sockets: the live-calls list, a call's live events, and listening in to its audio.

Each needs the session cookie and, when the browser says where it comes from, our own origin; a
socket without them is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from sqlalchemy.exc import SQLAlchemyError

from agent.dashboard import pages
from agent.dashboard.auth import COOKIE
from agent.security import is_call_id
from agent.worker.bus import LiveEvent, relay
from agent.worker.commands import Listen
from agent.worker.listen import END
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)
LIVE_CHECK_S = 5.0
"""Listen-in: after this long without audio, check that the call is still live."""
LIST_EVENTS = {"call.started", "call.ended", "state", "tags"}
"""Live events that change the live-calls list."""
LIST_DEBOUNCE_S = 0.2
LIST_REFRESH_S = 5.0
"""The live-calls list is sent again at least this often (a worker that died drops out)."""


def add_socket_routes(router: APIRouter) -> None:
    """The sockets under /dashboard."""

    @router.websocket("/live/{call_id}")
    async def live_events(ws: WebSocket, call_id: str) -> None:
        """A call's live events as JSON text frames, for the call view (session cookie, same origin)."""
        rt: Runtime = ws.app.state.runtime
        if await _ws_user(ws, rt, call_id) is None:
            return
        await relay(rt.bus.subscribe(call_id), ws.send_json)

    @router.websocket("/listen/{call_id}")
    async def listen_in(ws: WebSocket, call_id: str) -> None:
        """A live call's audio (agent.worker.listen packets as binary frames) until it ends or the supervisor
        stops; kept in the call's record as a supervisor `listen` event."""
        rt: Runtime = ws.app.state.runtime
        user = await _ws_user(ws, rt, call_id)
        if user is None:
            return
        packets = await _call_audio(rt, call_id, user)
        if packets is None:
            await ws.close(1000, "the call is not live")
            return

        async def pump() -> None:
            async for data in packets:
                await ws.send_bytes(data)

        try:
            await _until_done_or_gone(ws, pump())
        finally:
            await packets.aclose()
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(1000, "the call ended")

    @router.websocket("/live")
    async def live_list(ws: WebSocket) -> None:
        """The live calls of every worker as JSON snapshots ({"calls": [...], "now"}), sent again when a
        call starts, ends, changes state or is tagged (and every few seconds, for workers that died)."""
        rt: Runtime = ws.app.state.runtime
        if await _ws_user(ws, rt) is None:
            return
        subscription = rt.bus.subscribe()
        ended: set[str] = set()  # the registry may list an ended call for a moment longer

        async def snapshot() -> None:
            calls = [pages.live_row(c) for c in await rt.calls.listing() if c["call_id"] not in ended]
            await ws.send_json({"calls": calls, "now": time.time()})

        async def pump() -> None:
            await snapshot()
            while True:
                with contextlib.suppress(TimeoutError):
                    event = await asyncio.wait_for(subscription.queue.get(), LIST_REFRESH_S)
                    if event.kind not in LIST_EVENTS:
                        continue
                    await asyncio.sleep(LIST_DEBOUNCE_S)  # a burst of changes → one snapshot
                    for e in [event, *_drain(subscription.queue)]:
                        if e.kind == "call.ended":
                            ended.add(e.call_id)
                await snapshot()

        try:
            await _until_done_or_gone(ws, pump())
        finally:
            subscription.close()


def _drain(queue: asyncio.Queue[LiveEvent]) -> list[LiveEvent]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def _until_done_or_gone(ws: WebSocket, work: Coroutine[Any, Any, None]) -> None:
    """Run `work` (sending on `ws`) until it ends or the viewer closes the socket."""

    async def until_gone() -> None:
        while (await ws.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(work), asyncio.create_task(until_gone())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _ws_user(ws: WebSocket, rt: Runtime, call_id: str | None = None) -> str | None:
    """Accept a dashboard socket: its user, or None after closing it 1008 (no session, other origin,
    or a `call_id` that is not a call id)."""
    await ws.accept()
    cfg = rt.settings.service.dashboard
    try:
        signed_in = await rt.dashboard_sessions.signed_in(ws.cookies.get(COOKIE), cfg.session_ttl_s)
    except (SQLAlchemyError, OSError) as exc:
        log.warning(
            "dashboard socket: session not checked, the store is unreachable (%s)", type(exc).__name__
        )
        await ws.close(1011, "the store is unreachable")
        return None
    origin, host = ws.headers.get("origin"), ws.headers.get("host", "")
    if (
        signed_in is None
        or signed_in.user not in cfg.users
        or (origin is not None and origin.split("://")[-1] != host)
    ):
        await ws.close(1008, "unauthorized")
        return None
    if call_id is not None and not is_call_id(call_id):
        await ws.close(1008, "malformed call id")
        return None
    return signed_in.user


async def _call_audio(rt: Runtime, call_id: str, user: str) -> AsyncGenerator[bytes, None] | None:
    """A live call's audio packets, from this worker or the owner; None when it is not live."""
    if call_id in rt.calls.sessions:
        listener = rt.listen.listen(call_id)  # before the call can end unnoticed
        await rt.calls.execute(call_id, Listen(user))

        async def local() -> AsyncGenerator[bytes, None]:
            try:
                while True:
                    try:
                        data = await asyncio.wait_for(listener.queue.get(), LIVE_CHECK_S)
                    except TimeoutError:
                        if call_id not in rt.calls.sessions:
                            return  # ended without its END packet reaching us
                        continue
                    yield data
                    if data[0] == END:
                        return
            finally:
                listener.close()

        if call_id not in rt.calls.sessions:
            listener.close()
            return None
        return local()
    if rt.cluster is not None and any(c["call_id"] == call_id for c in await rt.calls.listing()):
        return rt.cluster.listen(call_id, user)
    return None
