"""CallRecord: one call's writes to the store, as they happen. A failed write is logged, never fatal."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, TypeVar

from agent.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


class CallRecord:
    """Appends turns, actions and events of one call; numbering of turns lives here."""

    def __init__(self, store: Store, call_id: str, cmiuuid: str | None = None) -> None:
        self.store = store
        self.call_id = call_id
        self.cmiuuid = cmiuuid
        self._turns = 0
        self.recent: deque[dict[str, str]] = deque(maxlen=6)
        """The last turns said (role, text), for notifications without a read of the store."""

    async def safe(self, coro: Awaitable[T]) -> T | None:
        """Run a store write; a failure is logged and the call goes on."""
        try:
            return await coro
        except Exception:
            log.exception("call %s: could not write the call record", self.call_id)
            return None

    async def update(self, **fields: Any) -> None:
        """Update the call row."""
        await self.safe(self.store.update_call(self.call_id, **fields))

    async def merge_meta(self, **fields: Any) -> None:
        """Set keys of the call's meta (tags...), keeping the others."""
        await self.safe(self.store.merge_call_meta(self.call_id, **fields))

    async def turn(self, role: str, text: str, started_at: float, **fields: Any) -> int | None:
        """Append a turn; returns its id for later updates."""
        idx = self._turns
        self._turns += 1
        if text:
            self.recent.append({"role": role, "text": text})
        return await self.safe(
            self.store.add_turn(self.call_id, idx=idx, role=role, text=text, started_at=started_at, **fields)
        )

    async def update_turn(self, turn_id: int | None, **fields: Any) -> None:
        """Update a turn; shielded so a cancelled reply still records how it ended."""
        if turn_id is not None:
            await asyncio.shield(self.safe(self.store.update_turn(turn_id, **fields)))

    async def action(self, kind: str, payload: Any, reason: Any) -> None:
        """Record an action taken on the call, with its reason."""
        await self.safe(self.store.add_action(self.call_id, kind, payload, reason, time.time()))

    async def event(self, source: str, status: str, payload: Any) -> None:
        """Record an event of ours on the call."""
        await self.safe(
            self.store.add_event(
                source=source,
                status=status,
                payload=payload,
                at=time.time(),
                call_id=self.call_id,
                cmiuuid=self.cmiuuid,
            )
        )
