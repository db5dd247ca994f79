"""A call's rows as the call goes: its row from answer (or stream) to end, its turns, actions and events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select, update

from agent.records.database import Sessions
from agent.records.tables import NEVER_STREAMED, UNSTREAMED, ActionRow, CallRow, EventRow, TurnRow


class CallRows:
    """Writes of a call's life: who claims its stream, how it ends, what was said and done on it."""

    def __init__(self, sessions: Sessions) -> None:
        self._session = sessions

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

    async def insert_call(self, **fields: Any) -> bool:
        """Insert a call row unless one with its id exists (a retried answer_url); True when inserted."""
        stmt = self._session.insert()(CallRow).values(**fields).on_conflict_do_nothing(index_elements=["id"])
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
            self._session.insert()(CallRow)
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


def _never_streamed() -> Any:
    """The status an unstreamed call ends with, as SQL over its current status."""
    return case(
        *((CallRow.status == before, after) for before, after in NEVER_STREAMED.items()), else_=CallRow.status
    )
