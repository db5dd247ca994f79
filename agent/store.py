"""Call records: calls, turns, actions, events and CDRs (SQLAlchemy 2; SQLite file or PostgreSQL).

Records are written as the call happens (not only at its end), so a dropped socket or a crashed process
still leaves what was said and done. `call_record()` builds the public JSON shape documented in README.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    case,
    delete,
    event,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

log = logging.getLogger(__name__)


class Base(DeclarativeBase):
    """Declarative base of the record tables."""


UNSTREAMED = ("answered", "dialing")
"""Statuses of calls whose stream has not connected yet: the only ones a stream may claim."""
NEVER_STREAMED = {"answered": "abandoned", "dialing": "unanswered"}
"""What an unstreamed call becomes when it ends without a stream (inbound: abandoned; outbound:
unanswered)."""


class CallRow(Base):
    """One call, inbound or outbound."""

    __tablename__ = "calls"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cmiuuid: Mapped[str | None] = mapped_column(String(128), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    bot: Mapped[str | None] = mapped_column(String(64), index=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    from_number: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float, index=True)
    connected_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    recording_path: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TurnRow(Base):
    """Something the caller or the bot said."""

    __tablename__ = "turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    heard_text: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    latency: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ActionRow(Base):
    """Something the service did on the call (PCMO sent, transfer, hangup...) and why."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSON)
    reason: Mapped[Any] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """A platform event (Event URL) or a stream event of ours; kept even when no call matches yet."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str | None] = mapped_column(String(64), index=True)
    cmiuuid: Mapped[str | None] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)


class CdrRow(Base):
    """A call detail record; PIOPIY retries them, so one row per (cmiuuid, leg)."""

    __tablename__ = "cdrs"
    __table_args__ = (UniqueConstraint("cmiuuid", "leg", name="uq_cdr_leg"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cmiuuid: Mapped[str] = mapped_column(String(128), index=True)
    leg: Mapped[str] = mapped_column(String(8))
    payload: Mapped[Any] = mapped_column(JSON)
    received_at: Mapped[float] = mapped_column(Float)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)


class EventDeliveryRow(Base):
    """A platform event already stored, by what identifies its delivery: a retry is stored once."""

    __tablename__ = "event_deliveries"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[float] = mapped_column(Float, index=True)


def _latest(incoming: Any, stored: Any) -> bool:
    """Without an order of its own, the latest delivery of a CDR is kept."""
    return True


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


def _engine(url: str) -> AsyncEngine:
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


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StoreUnwritable(OSError):
    """The SQLite file's shared-memory index (`-shm`) cannot be written: the store is not touched at all
    (an OSError, so record writes are kept and retried like any outage)."""


def _sqlite_shm(url: str) -> Path | None:
    """The `-shm` file SQLite maps into memory for a WAL database file (None: PostgreSQL or in memory)."""
    if not url.startswith("sqlite") or url.endswith((":memory:", ":///")):
        return None
    return Path(url.split(":///", 1)[1] + "-shm")


class _GuardedSessions:
    """The session factory, behind the SQLite guard: no session starts while `Store.unwritable_reason`
    says the mapped `-shm` cannot be written (touching it then is a SIGBUS, not an error)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._maker = async_sessionmaker(store.engine, expire_on_commit=False)

    def __call__(self) -> AsyncSession:
        self._store.check_writable()
        return self._maker()

    def begin(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session in a transaction (`async with store._session.begin() as s`)."""
        self._store.check_writable()
        return self._maker.begin()


class Store:
    """Async access to call records. One per process; safe to share between calls.

    A SQLite database in WAL mode keeps its shared index in `<file>-shm`, mapped into memory by every
    connection; once that file cannot be written (made immutable or read-only, a file system remounted
    read-only after an error), the next read or write through the mapping kills the process with
    SIGBUS instead of failing. So every session first checks that the file is writable (one access()
    call) and raises `StoreUnwritable` when it is not: the service degrades and retries instead of dying.
    """

    def __init__(self, url: str, *, base_dir: Path | None = None) -> None:
        self.url = async_url(url, base_dir)
        self.engine: AsyncEngine = _engine(self.url)
        self._shm = _sqlite_shm(self.url)
        self._session = _GuardedSessions(self)
        self.left_open = False
        """True when `close` could not close the SQLite connections safely (see `close`)."""

    def unwritable_reason(self) -> str | None:
        """Why the store must not be touched now (SQLite's `-shm` not writable), or None."""
        if self._shm is None or os.access(self._shm, os.W_OK) or not self._shm.exists():
            return None
        return f"{self._shm} is not writable (read-only or immutable); the database is not touched"

    def check_writable(self) -> None:
        """Raise StoreUnwritable when the store must not be touched now (see the class docstring)."""
        reason = self.unwritable_reason()
        if reason is not None:
            raise StoreUnwritable(errno.EROFS, reason)

    @asynccontextmanager
    async def _begin_engine(self) -> AsyncIterator[Any]:
        self.check_writable()
        async with self.engine.begin() as conn:
            yield conn

    async def init(self) -> None:
        """Create the tables when they do not exist."""
        async with self._begin_engine() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def close(self) -> None:
        """Release the connection pool. Closing the last connection to a SQLite file checkpoints it
        through the `-shm` mapping: while that file cannot be written the connections are left open
        (`left_open`; `hotline serve` then exits without running their finalizers)."""
        reason = self.unwritable_reason()
        if reason is not None:
            self.left_open = True
            log.error("the store's connections are left open: %s", reason)
            return
        await self.engine.dispose()

    async def create_call(self, **fields: Any) -> None:
        """Insert a call row (fields of CallRow). When the row exists already (a stream that reached
        another worker first while the store was away), fill in what it lacks and add to its meta."""
        async with self._session.begin() as s:
            row = await s.get(CallRow, fields["id"], with_for_update=True)
            if row is None:
                s.add(CallRow(**fields))
                return
            for key, value in fields.items():
                if key == "meta":
                    row.meta = {**(value or {}), **(row.meta or {})}
                elif getattr(row, key) is None:
                    setattr(row, key, value)

    def _insert(self) -> Any:
        """The dialect's INSERT with ON CONFLICT clauses."""
        return pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert

    async def insert_call(self, **fields: Any) -> bool:
        """Insert a call row unless one with its id exists (a retried answer_url); True when inserted."""
        stmt = self._insert()(CallRow).values(**fields).on_conflict_do_nothing(index_elements=["id"])
        async with self._session.begin() as s:
            # RETURNING, not rowcount: it is what the driver reports for an INSERT that did nothing.
            return (await s.execute(stmt.returning(CallRow.id))).first() is not None

    async def call_fields(self, call_id: str) -> dict[str, Any] | None:
        """A call's row as columns (no turns or events): what a retried answer_url answers again from."""
        async with self._session() as s:
            row = await s.get(CallRow, call_id)
            if row is None:
                return None
            return {c.key: getattr(row, c.key) for c in CallRow.__table__.columns}

    async def claim_stream(
        self, call_id: str, *, connected_at: float, served_by: dict[str, Any], absent: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The stream of a call connects: mark it `active` if it has never streamed, in one conditional
        update that only one worker can win, and record who serves it. Returns the call's numbers and
        cmiuuid, or None when the call has streamed or ended already (a replayed ws_url). A call with no
        row (its answer was not stored) is inserted from `absent`."""
        claimed = (
            update(CallRow)
            .where(CallRow.id == call_id, CallRow.status.in_(UNSTREAMED), CallRow.connected_at.is_(None))
            .values(status="active", connected_at=connected_at)
            .returning(CallRow.id)
        )
        fields = {"started_at": connected_at, **absent, "status": "active", "connected_at": connected_at}
        inserted = (
            self._insert()(CallRow)
            .values(id=call_id, meta={}, **fields)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(CallRow.id)
        )
        async with self._session.begin() as s:
            if (await s.execute(claimed)).first() is None and (await s.execute(inserted)).first() is None:
                return None
            row = await s.get(CallRow, call_id)
            assert row is not None  # claimed or inserted in this transaction
            row.meta = {**(row.meta or {}), "served_by": served_by}
            return {"from": row.from_number, "to": row.to_number, "cmiuuid": row.cmiuuid}

    async def close_unstreamed(
        self, call_id: str, *, end_reason: str, ended_at: float
    ) -> tuple[str, str] | None:
        """End a call whose stream never connected (PIOPIY's hangup event or CDR came first): `abandoned`
        (inbound) or `unanswered` (outbound). Returns (bot, status), or None when it had streamed or
        ended already."""
        async with self._session.begin() as s:
            row = (
                await s.execute(
                    update(CallRow)
                    .where(
                        CallRow.id == call_id, CallRow.status.in_(UNSTREAMED), CallRow.connected_at.is_(None)
                    )
                    .values(status=_never_streamed(), end_reason=end_reason, ended_at=ended_at)
                    .returning(CallRow.bot, CallRow.status)
                )
            ).first()
        return (row[0] or "unknown", row[1]) if row is not None else None

    async def expire_unstreamed(self, *, ttl_s: float, now: float, end_reason: str) -> list[tuple[str, str]]:
        """End every call answered longer ago than the stream token lifetime whose stream never
        connected (no token of theirs can open one any more); `ended_at` is when the token expired.
        Returns (bot, status) of each."""
        async with self._session.begin() as s:
            rows = (
                await s.execute(
                    update(CallRow)
                    .where(
                        CallRow.status.in_(UNSTREAMED),
                        CallRow.connected_at.is_(None),
                        CallRow.started_at < now - ttl_s,
                    )
                    .values(
                        status=_never_streamed(), end_reason=end_reason, ended_at=CallRow.started_at + ttl_s
                    )
                    .returning(CallRow.bot, CallRow.status)
                )
            ).all()
        return [(bot or "unknown", status) for bot, status in rows]

    async def mark_caller_hangup(self, call_id: str) -> None:
        """PIOPIY's hangup event came after the socket closed on its side: the caller ended the call."""
        async with self._session.begin() as s:
            await s.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.end_reason.like("socket_closed%"))
                .values(end_reason="caller_hangup")
            )

    async def recording_path(self, call_id: str) -> Path | None:
        """Where a call's two-channel recording is, if it has one."""
        async with self._session() as s:
            path = await s.scalar(select(CallRow.recording_path).where(CallRow.id == call_id))
        return Path(path) if path else None

    async def update_call(self, call_id: str, **fields: Any) -> None:
        """Update columns of a call."""
        async with self._session.begin() as s:
            await s.execute(update(CallRow).where(CallRow.id == call_id).values(**fields))

    async def merge_call_meta(self, call_id: str, **fields: Any) -> None:
        """Set keys of a call's meta JSON, keeping the others (one transaction)."""
        async with self._session.begin() as s:
            row = await s.get(CallRow, call_id, with_for_update=True)
            if row is not None:
                row.meta = {**(row.meta or {}), **fields}

    async def add_turn(self, call_id: str, **fields: Any) -> int:
        """Append a turn; returns its id (for later updates such as latencies or trimming)."""
        async with self._session.begin() as s:
            row = TurnRow(call_id=call_id, **fields)
            s.add(row)
            await s.flush()
            return row.id

    async def update_turn(self, turn_id: int, **fields: Any) -> None:
        """Update columns of a turn."""
        async with self._session.begin() as s:
            await s.execute(update(TurnRow).where(TurnRow.id == turn_id).values(**fields))

    async def add_action(self, call_id: str, type: str, payload: Any, reason: Any, at: float) -> None:
        """Record an action with the reason it was taken."""
        async with self._session.begin() as s:
            s.add(ActionRow(call_id=call_id, type=type, payload=payload, reason=reason, at=at))

    async def add_event(
        self, *, source: str, status: str, payload: Any, at: float, call_id: str | None, cmiuuid: str | None
    ) -> None:
        """Record an event; `call_id` may be unknown yet (joined later by cmiuuid)."""
        async with self._session.begin() as s:
            s.add(
                EventRow(
                    source=source, status=status, payload=payload, at=at, call_id=call_id, cmiuuid=cmiuuid
                )
            )

    async def add_platform_event(
        self, delivery: str, *, status: str, payload: Any, at: float, call_id: str | None, cmiuuid: str | None
    ) -> bool:
        """Record a PIOPIY event once per delivery key (`CallEvent.delivery_key`); False for a retry of
        one already stored (nothing is written then)."""
        mark = (
            self._insert()(EventDeliveryRow)
            .values(key=delivery, received_at=at)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(EventDeliveryRow.key)
        )
        async with self._session.begin() as s:
            if (await s.execute(mark)).first() is None:
                return False
            s.add(
                EventRow(
                    source="piopiy", status=status, payload=payload, at=at, call_id=call_id, cmiuuid=cmiuuid
                )
            )
        return True

    async def forget_deliveries(self, before: float) -> int:
        """Forget delivery keys received before `before` (PIOPIY retries within minutes)."""
        async with self._session.begin() as s:
            result = await s.execute(delete(EventDeliveryRow).where(EventDeliveryRow.received_at < before))
        return int(getattr(result, "rowcount", 0) or 0)

    async def upsert_cdr(
        self, cmiuuid: str, leg: str, payload: Any, at: float, *, newer: Callable[[Any, Any], bool] = _latest
    ) -> tuple[bool, bool]:
        """Store a CDR once per (cmiuuid, leg): each delivery is counted, and the stored CDR is replaced
        only by one `newer(incoming, stored)` says is newer (the webhook passes PIOPIY's order, so a late
        retry of an older CDR never replaces a newer one; by default the latest delivery is kept).
        Returns (first delivery, kept: this CDR is the one stored now)."""
        stmt = self._insert()(CdrRow).values(
            cmiuuid=cmiuuid, leg=leg, payload=payload, received_at=at, deliveries=1
        )
        # Counting the delivery locks the row (PostgreSQL) or the database (SQLite) for this transaction:
        # the comparison below cannot race another delivery of the same CDR.
        stmt = stmt.on_conflict_do_update(
            index_elements=["cmiuuid", "leg"], set_={"deliveries": CdrRow.deliveries + 1}
        ).returning(CdrRow.id, CdrRow.deliveries, CdrRow.payload)
        async with self._session.begin() as s:
            row_id, deliveries, stored = (await s.execute(stmt)).one()
            if deliveries == 1:
                return True, True
            if not newer(payload, stored):
                return False, False
            await s.execute(update(CdrRow).where(CdrRow.id == row_id).values(payload=payload, received_at=at))
        return False, True

    async def call_id_for(self, *, cmiuuid: str | None = None, request_id: str | None = None) -> str | None:
        """The call a platform id belongs to."""
        if not cmiuuid and not request_id:
            return None
        cond = CallRow.cmiuuid == cmiuuid if cmiuuid else CallRow.request_id == request_id
        async with self._session() as s:
            return await s.scalar(select(CallRow.id).where(cond).order_by(CallRow.started_at.desc()).limit(1))

    async def list_calls(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        bot: str | None = None,
        status: str | None = None,
        since: float | None = None,
        search: str | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Newest calls first, with the total count for paging. `since`: started at or after (epoch s);
        `search`: text in the call id, a number or any turn's words (see `_matching`)."""
        conditions = [
            col == value for col, value in ((CallRow.bot, bot), (CallRow.status, status)) if value is not None
        ]
        if since is not None:
            conditions.append(CallRow.started_at >= since)
        if search:
            conditions.append(_matching(search))
        query = select(CallRow).where(*conditions)
        count = select(func.count()).select_from(CallRow).where(*conditions)
        async with self._session() as s:
            total = await s.scalar(count) or 0
            rows = (
                await s.scalars(query.order_by(CallRow.started_at.desc()).limit(limit).offset(offset))
            ).all()
        return total, [_call_meta(r) for r in rows]

    async def caller_turn_counts(self, call_ids: Sequence[str]) -> dict[str, int]:
        """How many turns the caller took on each of these calls (calls without any are left out)."""
        if not call_ids:
            return {}
        query = (
            select(TurnRow.call_id, func.count())
            .where(TurnRow.call_id.in_(call_ids), TurnRow.role == "caller")
            .group_by(TurnRow.call_id)
        )
        async with self._session() as s:
            return {call_id: n for call_id, n in (await s.execute(query)).all()}

    async def call_ids_with_prefix(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids of calls starting with `prefix` (at most `limit`: two tell that a prefix is ambiguous)."""
        query = select(CallRow.id).where(CallRow.id.startswith(prefix, autoescape=True))
        async with self._session() as s:
            return list((await s.scalars(query.order_by(CallRow.id).limit(limit))).all())

    async def recordings_ended_before(self, cutoff: float) -> list[tuple[str, str, float]]:
        """(call id, recording path, ended at) of calls that ended before `cutoff` and still name a
        recording, oldest first."""
        query = (
            select(CallRow.id, CallRow.recording_path, CallRow.ended_at)
            .where(CallRow.recording_path.is_not(None), CallRow.ended_at < cutoff)
            .order_by(CallRow.ended_at)
        )
        async with self._session() as s:
            rows = (await s.execute(query)).all()
        return [(call_id, path, ended) for call_id, path, ended in rows if path and ended is not None]

    async def clear_recording(self, call_id: str, path: str, deleted_at: float) -> bool:
        """The recording at `path` is gone: clear the call's path and set `meta.recording_deleted_at`
        (ISO time) so its record says why. False when the row no longer names that file."""
        async with self._session.begin() as s:
            row = await s.get(CallRow, call_id, with_for_update=True)
            if row is None or row.recording_path != path:
                return False
            row.recording_path = None
            row.meta = {**(row.meta or {}), "recording_deleted_at": iso(deleted_at)}
            return True

    async def set_recording(self, call_id: str, path: str) -> bool:
        """The call's WAV is at `path` (finished after its hang-up): set it and drop
        `meta.recording_pending`. False when the call is unknown."""
        async with self._session.begin() as s:
            row = await s.get(CallRow, call_id, with_for_update=True)
            if row is None:
                return False
            row.recording_path = path
            row.meta = {k: v for k, v in (row.meta or {}).items() if k != "recording_pending"}
            return True

    async def mark_raw_recording_deleted(self, call_id: str, deleted_at: float) -> bool:
        """Retention removed the raw parts of a recording that never became a WAV: say so in the record
        (`meta.recording_deleted_at`). False when the call is unknown or names a recording."""
        async with self._session.begin() as s:
            row = await s.get(CallRow, call_id, with_for_update=True)
            if row is None or row.recording_path:
                return False
            meta = {k: v for k, v in (row.meta or {}).items() if k != "recording_pending"}
            row.meta = {**meta, "recording_deleted_at": iso(deleted_at)}
            return True

    async def recording_states(self, call_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Status, recording path and sample rate of these calls (unknown ones are left out)."""
        if not call_ids:
            return {}
        query = select(CallRow.id, CallRow.status, CallRow.recording_path, CallRow.sample_rate).where(
            CallRow.id.in_(call_ids)
        )
        async with self._session() as s:
            rows = (await s.execute(query)).all()
        return {i: {"status": st, "recording_path": p, "sample_rate": r} for i, st, p, r in rows}

    async def calls_left_active(self) -> list[dict[str, Any]]:
        """Calls still `active` (live, or left so by a worker that died): id, meta, times, sample rate."""
        query = select(
            CallRow.id, CallRow.meta, CallRow.started_at, CallRow.connected_at, CallRow.sample_rate
        ).where(CallRow.status == "active")
        async with self._session() as s:
            rows = (await s.execute(query)).all()
        return [
            {"id": i, "meta": m or {}, "started_at": st, "connected_at": c, "sample_rate": r}
            for i, m, st, c, r in rows
        ]

    async def claim_abandoned(self, call_id: str, *, end_reason: str, ended_at: float) -> bool:
        """Mark a call left `active` as `incomplete`; False when it is no longer active (it ended after
        all, or another worker claimed it first)."""
        async with self._session.begin() as s:
            result = await s.execute(
                update(CallRow)
                .where(CallRow.id == call_id, CallRow.status == "active")
                .values(status="incomplete", end_reason=end_reason, ended_at=ended_at)
            )
        return bool(getattr(result, "rowcount", 0))

    async def last_activity(self, call_id: str) -> float | None:
        """The latest time written for a call: its turns, actions and events (epoch seconds)."""
        queries = (
            select(func.max(func.coalesce(TurnRow.ended_at, TurnRow.started_at))).where(
                TurnRow.call_id == call_id
            ),
            select(func.max(ActionRow.at)).where(ActionRow.call_id == call_id),
            select(func.max(EventRow.at)).where(EventRow.call_id == call_id),
        )
        async with self._session() as s:
            times = [await s.scalar(q) for q in queries]
        return max((t for t in times if t is not None), default=None)

    async def call_record(self, call_id: str) -> dict[str, Any] | None:
        """The whole record of one call: meta, turns, actions, events and CDRs."""
        async with self._session() as s:
            call = await s.get(CallRow, call_id)
            if call is None:
                return None
            turns = (
                await s.scalars(select(TurnRow).where(TurnRow.call_id == call_id).order_by(TurnRow.idx))
            ).all()
            actions = (
                await s.scalars(select(ActionRow).where(ActionRow.call_id == call_id).order_by(ActionRow.id))
            ).all()
            event_match = EventRow.call_id == call_id
            if call.cmiuuid:
                event_match = event_match | (EventRow.cmiuuid == call.cmiuuid)
            events = (await s.scalars(select(EventRow).where(event_match).order_by(EventRow.id))).all()
            cdrs = (
                (
                    await s.scalars(select(CdrRow).where(CdrRow.cmiuuid == call.cmiuuid).order_by(CdrRow.leg))
                ).all()
                if call.cmiuuid
                else []
            )
        record = _call_meta(call)
        record["turns"] = [_turn(t, call.started_at) for t in turns]
        record["actions"] = [
            {"type": a.type, "payload": a.payload, "reason": a.reason, "at": iso(a.at)} for a in actions
        ]
        record["events"] = [
            {"source": e.source, "status": e.status, "at": iso(e.at), "payload": e.payload} for e in events
        ]
        record["cdr"] = [{"leg": c.leg, "deliveries": c.deliveries, **_dict(c.payload)} for c in cdrs]
        return record


def _never_streamed() -> Any:
    """The status an unstreamed call ends with, as SQL over its current status."""
    return case(
        *((CallRow.status == before, after) for before, after in NEVER_STREAMED.items()), else_=CallRow.status
    )


def _matching(text: str) -> ColumnElement[bool]:
    """Calls whose id or any turn's text contains `text` (case-insensitive: lower() LIKE on SQLite and
    PostgreSQL alike), or whose numbers contain its digits ('+91 98765' finds 919876543210)."""
    found = CallRow.id.icontains(text, autoescape=True) | exists().where(
        TurnRow.call_id == CallRow.id, TurnRow.text.icontains(text, autoescape=True)
    )
    digits = re.sub(r"[\s\-().+]", "", text)
    if digits.isdigit():
        for number in (CallRow.from_number, CallRow.to_number):
            found = found | number.contains(digits, autoescape=True)
    return found


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def _call_meta(c: CallRow) -> dict[str, Any]:
    end = c.ended_at
    return {
        "call_id": c.id,
        "cmiuuid": c.cmiuuid,
        "request_id": c.request_id,
        "bot": c.bot,
        "direction": c.direction,
        "from": c.from_number,
        "to": c.to_number,
        "status": c.status,
        "end_reason": c.end_reason,
        "started_at": iso(c.started_at),
        "connected_at": iso(c.connected_at),
        "ended_at": iso(end),
        "duration_s": round(end - c.started_at, 3) if end else None,
        "sample_rate": c.sample_rate,
        "recording": (
            {"url": f"/api/calls/{c.id}/recording", "channels": ["caller", "bot"]}
            if c.recording_path
            else None
        ),
        "tags": (c.meta or {}).get("tags", []),
        "meta": c.meta or {},
    }


def _turn(t: TurnRow, call_start: float) -> dict[str, Any]:
    def offset(ts: float | None) -> int | None:
        return None if ts is None else round((ts - call_start) * 1000)

    return {
        "index": t.idx,
        "role": t.role,
        "text": t.text,
        "heard_text": t.heard_text,
        "interrupted": t.interrupted,
        "started_at": iso(t.started_at),
        "ended_at": iso(t.ended_at),
        "start_ms": offset(t.started_at),
        "end_ms": offset(t.ended_at),
        "latency_ms": t.latency or {},
        **_with_translation(t.signals or {}),
    }


def _with_translation(signals: dict[str, Any]) -> dict[str, Any]:
    """A turn's signals, and its interpretation (kept in the signals column) as `translation`."""
    if "translation" not in signals:
        return {"signals": signals}
    rest = {k: v for k, v in signals.items() if k != "translation"}
    return {"signals": rest, "translation": signals["translation"]}
