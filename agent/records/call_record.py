"""CallRecord: one call's writes to the store, as they happen, through the process's RecordWriter.

A write the store cannot take now is kept and retried in order (agent/records/record_writer.py); one it
refuses is logged and dropped. Never fatal to the call.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from agent.records.record_writer import RecordWriter

log = logging.getLogger(__name__)


class CallRecord:
    """Appends turns, actions and events of one call; numbering of turns lives here."""

    def __init__(self, writer: RecordWriter, call_id: str, cmiuuid: str | None = None) -> None:
        self.writer = writer
        self.store = writer.store
        self.call_id = call_id
        self.cmiuuid = cmiuuid
        self._turns = 0
        self._turn_ids: dict[int, int] = {}  # turn index → its row id, once written
        self.recent: deque[dict[str, str]] = deque(maxlen=6)
        """The last turns said (role, text), for notifications without a read of the store."""

    async def update(self, **fields: Any) -> None:
        """Update the call row."""
        await self.writer.write(self.call_id, lambda: self.store.update_call(self.call_id, **fields), "call")

    async def merge_meta(self, **fields: Any) -> None:
        """Set keys of the call's meta (tags...), keeping the others."""
        await self.writer.write(
            self.call_id, lambda: self.store.merge_call_meta(self.call_id, **fields), "meta"
        )

    def next_turn(self) -> int:
        """Number the call's next turn (for `turn` and later updates; known before the store has the row)."""
        idx = self._turns
        self._turns += 1
        return idx

    async def turn(self, role: str, text: str, started_at: float, **fields: Any) -> int | None:
        """Append a turn; returns its index in the call, for later updates."""
        idx = self.next_turn()
        await self.add_turn(idx, role, text, started_at, **fields)
        return idx

    async def add_turn(self, idx: int | None, role: str, text: str, started_at: float, **fields: Any) -> None:
        """Append turn `idx` (numbered by `next_turn`)."""
        if idx is None:
            return
        if text:
            self.recent.append({"role": role, "text": text})

        async def add() -> None:
            self._turn_ids[idx] = await self.store.add_turn(
                self.call_id, idx=idx, role=role, text=text, started_at=started_at, **fields
            )

        await self.writer.write(self.call_id, add, "turn")

    async def update_turn(self, turn_id: int | None, **fields: Any) -> None:
        """Update a turn (by the index `turn` returned); a cancelled reply still records how it ended."""
        if turn_id is None:
            return
        idx = turn_id

        async def change() -> None:
            row = self._turn_ids.get(idx)  # its add came first in this call's lane
            if row is None:
                log.warning("call %s: turn %d was never written; update dropped", self.call_id, idx)
                return
            await self.store.update_turn(row, **fields)

        await self.writer.write(self.call_id, change, "turn update")

    async def action(self, kind: str, payload: Any, reason: Any) -> None:
        """Record an action taken on the call, with its reason."""
        at = time.time()
        await self.writer.write(
            self.call_id, lambda: self.store.add_action(self.call_id, kind, payload, reason, at), "action"
        )

    async def event(self, source: str, status: str, payload: Any) -> None:
        """Record an event of ours on the call."""
        at, cmiuuid = time.time(), self.cmiuuid
        await self.writer.write(
            self.call_id,
            lambda: self.store.add_event(
                source=source, status=status, payload=payload, at=at, call_id=self.call_id, cmiuuid=cmiuuid
            ),
            "event",
        )
