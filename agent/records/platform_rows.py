"""The platform's deliveries: events stored once per delivery, CDRs once per leg, its ids mapped to calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select, update

from agent.records.database import Sessions
from agent.records.tables import CallRow, CdrRow, EventDeliveryRow, EventRow


def _latest(incoming: Any, stored: Any) -> bool:
    """Without an order of its own, the latest delivery of a CDR is kept."""
    return True


class PlatformRows:
    """What the carrier's webhooks deliver, written once however often it is retried."""

    def __init__(self, sessions: Sessions) -> None:
        self._session = sessions

    async def add_platform_event(
        self, delivery: str, *, status: str, payload: Any, at: float, call_id: str | None, cmiuuid: str | None
    ) -> bool:
        """Record a PIOPIY event once per delivery key (`CallEvent.delivery_key`); False for a retry of
        one already stored (nothing is written then)."""
        mark = (
            self._session.insert()(EventDeliveryRow)
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
        stmt = self._session.insert()(CdrRow).values(
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
