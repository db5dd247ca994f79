"""Where each call's recording is, as the recorder finishes it and retention deletes it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from agent.records.database import Sessions
from agent.records.record_json import iso
from agent.records.tables import CallRow


class RecordingRows:
    """The recording columns of the calls table (path, pending or deleted in meta)."""

    def __init__(self, sessions: Sessions) -> None:
        self._session = sessions

    async def recording_path(self, call_id: str) -> Path | None:
        """Where a call's two-channel recording is, if it has one."""
        async with self._session() as s:
            path = await s.scalar(select(CallRow.recording_path).where(CallRow.id == call_id))
        return Path(path) if path else None

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
