"""Store: the one object holding call records (SQLite file or PostgreSQL), made of its table groups.

Records are written as the call happens (not only at its end), so a dropped socket or a crashed process
still leaves what was said and done. `call_record()` builds the public JSON shape documented in README.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from agent.records.call_queries import CallQueries
from agent.records.call_rows import CallRows
from agent.records.database import Sessions, StoreUnwritable, async_url, engine_for, sqlite_shm
from agent.records.platform_rows import PlatformRows
from agent.records.recording_rows import RecordingRows
from agent.records.tables import Base

log = logging.getLogger(__name__)


class Store:
    """Async access to call records. One per process; safe to share between calls.

    Its methods are those of its table groups (`CallRows`, `PlatformRows`, `CallQueries`,
    `RecordingRows`), each of which holds only the guarded sessions.

    A SQLite database in WAL mode keeps its shared index in `<file>-shm`, mapped into memory by every
    connection; once that file cannot be written (made immutable or read-only, a file system remounted
    read-only after an error), the next read or write through the mapping kills the process with
    SIGBUS instead of failing. So every session first checks that the file is writable (one access()
    call) and raises `StoreUnwritable` when it is not: the service degrades and retries instead of dying.
    """

    def __init__(self, url: str, *, base_dir: Path | None = None) -> None:
        self.url = async_url(url, base_dir)
        self.engine: AsyncEngine = engine_for(self.url)
        self._shm = sqlite_shm(self.url)
        self._session = Sessions(self.engine, self.check_writable)
        self.left_open = False
        """True when `close` could not close the SQLite connections safely (see `close`)."""

        calls = CallRows(self._session)
        self.create_call = calls.create_call
        self.insert_call = calls.insert_call
        self.call_fields = calls.call_fields
        self.claim_stream = calls.claim_stream
        self.close_unstreamed = calls.close_unstreamed
        self.expire_unstreamed = calls.expire_unstreamed
        self.mark_caller_hangup = calls.mark_caller_hangup
        self.update_call = calls.update_call
        self.merge_call_meta = calls.merge_call_meta
        self.add_turn = calls.add_turn
        self.update_turn = calls.update_turn
        self.add_action = calls.add_action
        self.add_event = calls.add_event
        self.calls_left_active = calls.calls_left_active
        self.claim_abandoned = calls.claim_abandoned
        self.last_activity = calls.last_activity

        platform = PlatformRows(self._session)
        self.add_platform_event = platform.add_platform_event
        self.forget_deliveries = platform.forget_deliveries
        self.upsert_cdr = platform.upsert_cdr
        self.call_id_for = platform.call_id_for

        queries = CallQueries(self._session)
        self.list_calls = queries.list_calls
        self.caller_turn_counts = queries.caller_turn_counts
        self.call_ids_with_prefix = queries.call_ids_with_prefix
        self.call_record = queries.call_record

        recordings = RecordingRows(self._session)
        self.recording_path = recordings.recording_path
        self.recordings_ended_before = recordings.recordings_ended_before
        self.clear_recording = recordings.clear_recording
        self.set_recording = recordings.set_recording
        self.mark_raw_recording_deleted = recordings.mark_raw_recording_deleted
        self.recording_states = recordings.recording_states

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

    async def init(self) -> None:
        """Create the tables when they do not exist."""
        self.check_writable()
        async with self.engine.begin() as conn:
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
