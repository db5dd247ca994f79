"""Run an ASGI app on a real local port: in a background thread, or as a task in the running loop.

Used for the service under test, the fake PIOPIY REST API and the fake LLM server. Each server gets
its own free port, is reachable before the `with` body runs, and is fully stopped when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator, MutableMapping
from typing import Any, Self

import uvicorn

from agent.web.websocket_protocol import WebSocketProtocol

logger = logging.getLogger(__name__)

# The ASGI callable shape, spelled out so any framework's app fits without importing its types.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_STARTUP_TIMEOUT_S = 10.0
DEFAULT_SHUTDOWN_TIMEOUT_S = 5.0
# After a graceful stop times out: how long force_exit gets before we give up on the server.
_FORCE_EXIT_GRACE_S = 2.0
_POLL_S = 0.01


class ServerStartupError(RuntimeError):
    """The server did not come up: the app's startup failed, or it was not listening in time."""


class ServerShutdownError(RuntimeError):
    """The server did not stop in time (a request or a lifespan shutdown handler hangs)."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn.Server that leaves signal handling to the host process.

    Run as a task in the main thread, stock uvicorn would take over SIGINT/SIGTERM for its lifetime,
    so Ctrl-C would stop only the embedded server instead of pytest or the CLI around it.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class _StartupFailureRecorder:
    """ASGI wrapper that keeps the reason an app gave for a failed lifespan startup.

    uvicorn only logs it and exits; keeping it lets ServerStartupError say what went wrong.
    """

    def __init__(self, app: AsgiApp) -> None:
        self.app = app
        self.failure: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "lifespan":
            await self.app(scope, receive, send)
            return

        async def recording_send(message: Message) -> None:
            if message.get("type") == "lifespan.startup.failed":
                self.failure = str(message.get("message") or "no reason given")
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as exc:
            self.failure = self.failure or f"{type(exc).__name__}: {exc}"
            raise


def _bind_socket(host: str) -> socket.socket:
    """Bind a free port ourselves and hand the socket to uvicorn: no race between picking and binding."""
    family, kind, proto, _, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    # Not listening yet: connections are refused until uvicorn serves, so "accepts" means "ready".
    return sock


def _base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _make_server(app: AsgiApp, sock: socket.socket, shutdown_timeout_s: float) -> _EmbeddedServer:
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        # The sans-I/O implementation of the `websockets` package: the legacy one is deprecated in
        # uvicorn >= 0.35 and warns on import. Both do permessage-deflate and answer pings. Ours closes
        # text frames that are not UTF-8 without uvicorn's tracebacks (agent/web/websocket_protocol.py).
        ws=WebSocketProtocol,
        # As `hotline serve`: client addresses are the app's to resolve (agent/web/client_address.py).
        proxy_headers=False,
        lifespan="on",
        log_level="warning",
        # Leave logging setup to the host (pytest, the CLI): uvicorn's dictConfig would replace it.
        log_config=None,
        # Bounds how long open connections and running requests may delay a stop.
        timeout_graceful_shutdown=max(1, math.ceil(shutdown_timeout_s)),
    )
    return _EmbeddedServer(config)


def _startup_error(label: str, recorder: _StartupFailureRecorder, cause: BaseException | None) -> str:
    if recorder.failure:
        reason = recorder.failure.strip().splitlines()[-1]
        return f"{label}: the app's startup failed: {reason}"
    if cause is not None and not isinstance(cause, SystemExit):
        return f"{label}: uvicorn failed: {type(cause).__name__}: {cause}"
    return f"{label}: uvicorn exited during startup (see the uvicorn.error log)"


def _accepts_connections(sock: socket.socket) -> bool:
    try:
        with socket.create_connection(sock.getsockname()[:2], timeout=1.0):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serve_in_thread(
    app: AsgiApp,
    *,
    host: str = "127.0.0.1",
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> Iterator[str]:
    """Serve `app` with uvicorn in a background thread; yield its base URL ("http://127.0.0.1:PORT").

    Blocks until the server accepts connections (ServerStartupError on failure or timeout) and, on
    exit, until the thread has ended (ServerShutdownError if it hangs past the shutdown timeout).
    """
    sock = _bind_socket(host)
    url = _base_url(sock)
    label = f"server for {type(app).__name__} on {url}"
    recorder = _StartupFailureRecorder(app)
    server = _make_server(recorder, sock, shutdown_timeout_s)
    failure: list[BaseException] = []
    running: list[tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]]] = []

    async def serve() -> None:
        # Kept so a server stuck where should_exit is never read (a hanging startup) can be cancelled.
        task = asyncio.current_task()
        assert task is not None
        running.append((asyncio.get_running_loop(), task))
        await server.serve(sockets=[sock])

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # incl. SystemExit: uvicorn exits that way on startup failure
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"uvicorn {url}", daemon=True)
    thread.start()
    stopped = False
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not (server.started and _accepts_connections(sock)):
            if not thread.is_alive():
                raise ServerStartupError(_startup_error(label, recorder, failure[0] if failure else None))
            if time.monotonic() > deadline:
                raise ServerStartupError(f"{label}: not listening after {startup_timeout_s:g} s")
            time.sleep(_POLL_S)
        yield url
    finally:
        server.should_exit = True
        if server.started:
            thread.join(shutdown_timeout_s + _FORCE_EXIT_GRACE_S)
        if thread.is_alive() and server.started:
            server.force_exit = True  # skip waiting for connections and the app's shutdown handlers
            thread.join(_FORCE_EXIT_GRACE_S)
        if thread.is_alive() and running:
            loop, task = running[0]
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the thread is ending
                loop.call_soon_threadsafe(task.cancel)
            thread.join(_FORCE_EXIT_GRACE_S)
        sock.close()
        stopped = not thread.is_alive()
        if not stopped:
            logger.error("%s did not stop; its daemon thread is left behind", label)
    # Reached only when the body did not raise: never mask the body's own exception.
    if not stopped:
        raise ServerShutdownError(f"{label}: still running {shutdown_timeout_s:g} s after stop was asked")


@contextlib.asynccontextmanager
async def serve_in_task(
    app: AsgiApp,
    *,
    host: str = "127.0.0.1",
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S,
) -> AsyncIterator[str]:
    """Serve `app` with uvicorn as a task of the running event loop; yield its base URL.

    Same contract as serve_in_thread, except that a server that will not stop is cancelled rather
    than reported. Requests are served by the caller's loop: the body must await, never block.
    """
    sock = _bind_socket(host)
    url = _base_url(sock)
    label = f"server for {type(app).__name__} on {url}"
    recorder = _StartupFailureRecorder(app)
    server = _make_server(recorder, sock, shutdown_timeout_s)

    async def run() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit as exc:
            # A SystemExit escaping a task would stop the whole event loop, not just this server.
            raise ServerStartupError(_startup_error(label, recorder, exc)) from None

    task = asyncio.create_task(run(), name=f"uvicorn {url}")
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if task.done():
                exc = None if task.cancelled() else task.exception()
                if isinstance(exc, ServerStartupError):
                    raise exc
                raise ServerStartupError(_startup_error(label, recorder, exc))
            if time.monotonic() > deadline:
                raise ServerStartupError(f"{label}: not listening after {startup_timeout_s:g} s")
            await asyncio.sleep(_POLL_S)
        yield url
    finally:
        server.should_exit = True
        if server.started:
            await asyncio.wait({task}, timeout=shutdown_timeout_s + _FORCE_EXIT_GRACE_S)
        if not task.done() and server.started:
            server.force_exit = True
            await asyncio.wait({task}, timeout=_FORCE_EXIT_GRACE_S)
        if not task.done():
            logger.warning("%s did not stop; cancelling it", label)
            task.cancel()
            await asyncio.wait({task}, timeout=_FORCE_EXIT_GRACE_S)
        sock.close()
        # Retrieve the outcome so asyncio never warns about an exception nobody looked at.
        if task.done() and not task.cancelled() and (crash := task.exception()) is not None:
            if not isinstance(crash, ServerStartupError):
                logger.error("%s crashed: %r", label, crash)


class ServedApp:
    """Base of the test servers: `self.app` served on a free local port for a `with` block.

    `stop()` ends it early (a backend dying mid-call); handlers that wait for ever should watch
    `stopping`, set just before the server shuts down, so a stop never waits on them.
    """

    app: AsgiApp

    def __init__(self, *, host: str = "127.0.0.1") -> None:
        self.host = host
        self.stopping = threading.Event()
        self._base_url: str | None = None
        self._stack: contextlib.ExitStack | None = None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT while the server runs."""
        if self._base_url is None:
            raise RuntimeError(f"{type(self).__name__} is not running: use it in a `with` block")
        return self._base_url

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        """Serve the app in a background thread for the duration of the block."""
        self.stopping.clear()
        with serve_in_thread(self.app, host=self.host) as url:
            self._base_url = url
            try:
                yield self
            finally:
                self._base_url = None
                self.stopping.set()

    def start(self) -> None:
        """Start serving (what `with` does)."""
        if self._stack is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        stack = contextlib.ExitStack()
        stack.enter_context(self.running())
        self._stack = stack

    def stop(self) -> None:
        """Stop serving now; new connections are refused from here on. Safe to call twice."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
