"""The database under the store: URL, engine (SQLite in WAL mode or PostgreSQL), guarded sessions."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def async_url(url: str, base_dir: Path | None = None) -> str:
    """Map a plain database URL to its asyncio driver; a relative SQLite path is taken from base_dir."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            p = Path(path)
            if not p.is_absolute() and base_dir is not None:
                p = base_dir / p
            p.parent.mkdir(parents=True, exist_ok=True)
            path = str(p)
        return f"sqlite+aiosqlite:///{path}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def engine_for(url: str) -> AsyncEngine:
    """The engine. A SQLite file is put in WAL mode with synchronous=NORMAL: with its default rollback
    journal every commit waits for the disk, and 200 concurrent calls (bench/load.py) queued their writes
    until the pool gave up ("database is locked", "QueuePool limit ... reached"). In WAL mode readers
    never wait for the writer and a commit needs no fsync: a killed process loses nothing committed, a
    power cut may lose the last commits. A writer waits up to 30 s for another (SQLite's default: 5)."""
    if not url.startswith("sqlite") or url.endswith((":memory:", ":///")):
        return create_async_engine(url, pool_pre_ping=True)
    engine = create_async_engine(url, pool_pre_ping=True, connect_args={"timeout": 30.0})

    @event.listens_for(engine.sync_engine, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


class StoreUnwritable(OSError):
    """The SQLite file's shared-memory index (`-shm`) cannot be written: the store is not touched at all
    (an OSError, so record writes are kept and retried like any outage)."""


def sqlite_shm(url: str) -> Path | None:
    """The `-shm` file SQLite maps into memory for a WAL database file (None: PostgreSQL or in memory)."""
    if not url.startswith("sqlite") or url.endswith((":memory:", ":///")):
        return None
    return Path(url.split(":///", 1)[1] + "-shm")


class Sessions:
    """The session factory every table group opens, behind the SQLite guard: no session starts while
    `check_writable` says the mapped `-shm` cannot be written (touching it then is a SIGBUS, not an error)."""

    def __init__(self, engine: AsyncEngine, check_writable: Callable[[], None]) -> None:
        self._check_writable = check_writable
        self._maker = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name

    def __call__(self) -> AsyncSession:
        self._check_writable()
        return self._maker()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a transaction (`async with self._session.begin() as s`)."""
        self._check_writable()
        return self._maker.begin()

    def insert(self) -> Any:
        """The dialect's INSERT with ON CONFLICT clauses."""
        return pg_insert if self._dialect == "postgresql" else sqlite_insert
