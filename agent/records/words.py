"""Call records in words, for operators: what an action did, why, and the call as transcript lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.records.call_facts import Record, answered_in, barge_ins, seconds_at


def describe_action(action: Mapping[str, Any]) -> str:
    """What an action did, in a few words: "transfer → senior", "tool order_status(order_id=12345)"."""
    kind, payload = action.get("type"), action.get("payload")
    reason = _reason_of(action)
    if kind == "tool" and isinstance(payload, Mapping):
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in (payload.get("args") or {}).items())
        return f"tool {payload.get('tool')}({args})"
    if kind == "tag" and isinstance(payload, Mapping):
        return "tag " + ", ".join(str(t) for t in payload.get("tags") or [])
    if kind == "notify" and isinstance(payload, Mapping):
        return f"notify {payload.get('webhook')}"  # the name, not the URL: the page stays link-free
    if kind == "supervisor" and isinstance(payload, Mapping):
        department = payload.get("department")
        return f"supervisor: {payload.get('action')}" + (f" → {department}" if department else "")
    steps = [p for p in payload or [] if isinstance(p, Mapping)] if isinstance(payload, list) else []
    if kind == "answer":
        return "answer: " + ", ".join(str(p.get("action")) for p in steps)
    words = []
    for step in steps:
        if step.get("action") == "bridge":
            numbers = ", ".join(str(c.get("number")) for c in step.get("connect") or [])
            words.append(f"transfer → {reason.get('department') or numbers}")
        else:
            words.append(str(step.get("action")))
    return ", ".join(words) or str(kind)


def action_label(action: Mapping[str, Any]) -> str:
    """A short label for the timeline: "→ senior (angry_caller)", "tool order_status", "tag angry"."""
    what, reason = describe_action(action), _reason_of(action)
    if what.startswith("transfer → "):
        why = reason.get("rule") or reason.get("intent")
        return what.removeprefix("transfer ") + (f" ({why})" if why else "")
    return what.split("(")[0]


def describe_reason(reason: Any) -> str:
    """Why an action happened, readably: "rule angry_caller at caller turn 3; sentiment.rolling=-0.488"."""
    if not isinstance(reason, Mapping):
        return "" if reason is None else str(reason)
    rest = dict(reason)
    rule, turn, trigger = rest.pop("rule", None), rest.pop("caller_turn", None), rest.pop("trigger", None)
    signals, intent = rest.pop("signals", None), rest.pop("intent", None)
    rest.pop("priority", None)
    parts = []
    if rule:
        on = f" on {trigger}" if trigger not in (None, "turn") else ""
        parts.append(f"rule {rule}{on}" + (f" at caller turn {turn}" if turn is not None else ""))
    elif trigger == "transfer_failed":
        why = rest.pop("why", None)
        parts.append(f"transfer to {rest.pop('department', '?')} failed" + (f": {why}" if why else ""))
    elif trigger:
        parts.append(f"trigger {trigger}")
    if intent:
        parts.append(f"intent {intent}")
        parts += [f"confidence {_fmt(rest.pop('confidence'))}"] if "confidence" in rest else []
        parts += [f"matched by {rest.pop('matched_by')}"] if "matched_by" in rest else []
    rest.pop("department", None)  # the action's own words name it
    text = ", ".join(parts + [f"{k} {_fmt(v)}" for k, v in rest.items()])
    if isinstance(signals, Mapping) and signals:
        text += "; " + ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(signals.items()))
    return text


def transcript_text(record: Record) -> str:
    """The call as lines in time order: turns (caller intent and sentiment, bot response time, cut bot
    turns), actions with their reasons, barge-ins and transfer outcomes."""
    lines: list[tuple[float, int, str, str]] = []
    turns = list(record.get("turns") or [])
    answers = answered_in(turns)
    for i, turn in enumerate(turns):
        text, signals = str(turn.get("text") or ""), turn.get("signals") or {}
        if turn.get("role") == "caller":
            notes = [f"intent {signals['intent']}"] if signals.get("intent") else []
            notes += [f"sentiment {signals['sentiment']:.2f}"] if signals.get("sentiment") is not None else []
            text += f" [{', '.join(notes)}]" if notes else ""
        else:
            text += f" (answered in {answers[i]:.0f} ms)" if i in answers else ""
            if turn.get("interrupted"):
                heard = turn.get("heard_text")
                text += f" (cut by the caller after: {heard})" if heard else " (cut by the caller at once)"
        lines.append((float(turn.get("start_ms") or 0) / 1000, 0, str(turn.get("role")), text))
    for action in record.get("actions") or []:
        why = describe_reason(action.get("reason"))
        text = describe_action(action) + (f" ({why})" if why else "")
        lines.append((seconds_at(record, action.get("at")) or 0.0, 1, "action", text))
    for onset, detected in barge_ins(record):
        seen = f"caller barged in (detected after {1000 * (detected - onset):.0f} ms)"
        lines.append((onset, 2, "event", seen))
    for event in record.get("events") or []:
        if event.get("source") == "transfer":
            failure = (event.get("payload") or {}).get("why")
            text = f"transfer {event.get('status')}" + (f": {failure}" if failure else "")
            lines.append((seconds_at(record, event.get("at")) or 0.0, 2, "event", text))
    lines.sort(key=lambda line: line[:2])
    return "".join(f"{t:6.1f} s  {who:<6}  {text}\n" for t, _, who, text in lines)


def _reason_of(action: Mapping[str, Any]) -> Mapping[str, Any]:
    reason = action.get("reason")
    return reason if isinstance(reason, Mapping) else {}


def _fmt(value: Any) -> str:
    """A value for reading: floats to three decimals at most."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    return str(value)
