"""`hotline serve`: uvicorn with a graceful drain, so a deploy or a scale-down never cuts a caller off.

On the first SIGTERM (or Ctrl-C) the worker starts draining: `/healthz` answers 503 (a load balancer or
Kubernetes readiness probe stops sending work), answer_url gives new calls the configured fallback
PCMO, and live calls go on until they end or `server.drain_timeout_s` passes. Then the calls still
live are closed and saved (end reason `shutdown`) and the process exits 0. A second signal exits at
once (the records written so far stay: they are saved as the call goes).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Any

import uvicorn

from agent.config.settings import Settings
from agent.web.http_protocol import MAX_HEADER_BYTES, RequestDeadlines, http_protocol
from agent.web.websocket_protocol import WebSocketProtocol
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first exit signal drains live calls first (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task[None] | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        runtime = self._runtime()
        if self._drain is not None or self._loop is None or runtime is None or runtime.draining:
            super().handle_exit(sig, frame)  # a second signal, or nothing to drain: stop now
            return
        runtime.draining = True
        log.warning(
            "%s: draining %d live calls (up to %.0f s); new calls get the fallback",
            signal.Signals(sig).name, len(runtime.calls.sessions), self.drain_timeout_s,
        )  # fmt: skip
        self._loop.call_soon_threadsafe(self._start_drain, runtime)

    def _start_drain(self, runtime: Runtime) -> None:
        self._drain = asyncio.ensure_future(self._drain_then_exit(runtime))

    async def _drain_then_exit(self, runtime: Runtime) -> None:
        await runtime.calls.wait_idle(self.drain_timeout_s)
        for session in list(runtime.calls.sessions.values()):
            log.warning("call %s still live at the drain deadline: closing it", session.call_id)
            await session.close("shutdown")
        log.info("drained; stopping")
        self.should_exit = True

    def _runtime(self) -> Runtime | None:
        app = self.config.app
        state = getattr(app, "state", None)
        runtime = getattr(state, "runtime", None)
        return runtime if isinstance(runtime, Runtime) else None


def uvicorn_config(settings: Settings, host: str | None = None, port: int | None = None) -> uvicorn.Config:
    """How `hotline serve` runs uvicorn: our HTTP and WebSocket protocols, timeouts and limits."""
    from agent.web.app import create_app

    server = settings.service.server
    if "FORWARDED_ALLOW_IPS" in os.environ:
        log.warning(
            "FORWARDED_ALLOW_IPS is ignored: client addresses come from server.trusted_proxies "
            "(HOTLINE_TRUSTED_PROXIES), which trusts only the balancers it names"
        )
    deadlines = RequestDeadlines(server.header_timeout_s, server.body_timeout_s)
    return uvicorn.Config(
        create_app(settings),
        host=host or server.host,
        port=port or server.port,
        http=http_protocol(deadlines),  # h11, with header and body deadlines (slowloris)
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        timeout_keep_alive=server.keep_alive_timeout_s,
        # The app resolves client addresses itself, trusting only server.trusted_proxies
        # (agent/web/client_address.py); uvicorn's FORWARDED_ALLOW_IPS="*" believed what clients wrote.
        proxy_headers=False,
        ws=WebSocketProtocol,  # the websockets package, sans-I/O (the legacy one is deprecated)
        # Frames over our own limit are closed with 1009 by the stream handler, not by uvicorn.
        ws_max_size=settings.service.security.max_frame_bytes * 4 + 65536,
        log_level="warning",
        timeout_graceful_shutdown=5,  # calls are drained before uvicorn's own shutdown starts
    )


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the service until it is told to stop, then drain and exit."""
    config = uvicorn_config(settings, host, port)
    worker = DrainingServer(config, settings.service.server.drain_timeout_s)
    worker.run()
    runtime = worker._runtime()
    if runtime is not None and runtime.store.left_open:
        # The SQLite connections could not be closed safely (agent/records/store.py): their finalizers would
        # touch the unwritable -shm mapping and end the process with SIGBUS. What was written is on disk.
        log.error("exiting without closing the SQLite connections (their -shm file is not writable)")
        logging.shutdown()
        os._exit(0)
