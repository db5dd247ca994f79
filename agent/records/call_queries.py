"""Reads of call records for the dashboard, the API and the CLI: the call list, its search, one record."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select

from agent.records.database import Sessions
from agent.records.record_json import call_meta, full_record
from agent.records.tables import ActionRow, CallRow, CdrRow, EventRow, TurnRow


class CallQueries:
    """The calls as operators read them: listed, searched, counted, and one call whole."""

    def __init__(self, sessions: Sessions) -> None:
        self._session = sessions

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
        return total, [call_meta(r) for r in rows]

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
        return full_record(call, turns, actions, events, cdrs)


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
