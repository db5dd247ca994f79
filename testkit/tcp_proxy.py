"""A TCP proxy that can be cut: a database or Redis that goes away and comes back, for fault tests.

    with TcpProxy("127.0.0.1", 5432) as proxy:          # point the service at proxy.port
        proxy.cut()      # every connection is reset, new ones are reset as soon as they connect
        proxy.restore()  # connections go through again

It runs on its own thread and loop, so it keeps serving while a test's loop waits or blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `target_host`:`target_port` until cut (see the module docstring)."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.accepted = 0
        """Connections accepted so far, refused ones included."""
        self._cut = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None

    # ------------------------------------------------------------------------------ control

    def start(self) -> None:
        """Listen on a free port (kept across cuts) and forward until `stop`."""
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the TCP proxy did not start")

    def stop(self) -> None:
        """Close everything and stop the thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def cut(self) -> None:
        """The target is gone: reset every open connection and every new one."""
        self._cut.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._reset_all)

    def restore(self) -> None:
        """The target is back: new connections go through."""
        self._cut.clear()

    @property
    def is_cut(self) -> bool:
        """True between `cut` and `restore`."""
        return self._cut.is_set()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ the loop

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._client, self.host, 0)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        async with server:
            await self._stop.wait()
            self._reset_all()
            pipes = asyncio.all_tasks() - {asyncio.current_task()}
            if pipes:  # they end as soon as their sockets are reset
                _, late = await asyncio.wait(pipes, timeout=2)
                for task in late:
                    task.cancel()

    def _reset_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._cut.is_set():
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in pair:
                w.transport.abort()
            self._writers -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
