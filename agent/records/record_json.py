"""The public record JSON (`GET /api/calls/{id}`, documented in README) built from the record tables' rows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from agent.records.tables import ActionRow, CallRow, CdrRow, EventRow, TurnRow


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def full_record(
    call: CallRow,
    turns: Sequence[TurnRow],
    actions: Sequence[ActionRow],
    events: Sequence[EventRow],
    cdrs: Sequence[CdrRow],
) -> dict[str, Any]:
    """The whole record of one call: meta, turns, actions, events and CDRs."""
    record = call_meta(call)
    record["turns"] = [_turn(t, call.started_at) for t in turns]
    record["actions"] = [
        {"type": a.type, "payload": a.payload, "reason": a.reason, "at": iso(a.at)} for a in actions
    ]
    record["events"] = [
        {"source": e.source, "status": e.status, "at": iso(e.at), "payload": e.payload} for e in events
    ]
    record["cdr"] = [{"leg": c.leg, "deliveries": c.deliveries, **_dict(c.payload)} for c in cdrs]
    return record


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {"value": value}


def call_meta(c: CallRow) -> dict[str, Any]:
    """A call's row as the head of its public record (also one item of the call list)."""
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
