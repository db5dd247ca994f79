"""The call report as one self-contained HTML page: no external URLs, scripts or stylesheets.

The timeline picture and the recording are embedded as data URIs, so the file can be mailed or
attached to a ticket on its own. Every text from the record is escaped.
"""

from __future__ import annotations

import base64
from collections.abc import Container, Sequence
from html import escape
from typing import Any

from agent.records.call_facts import Record, answered_in, call_duration_s, seconds_at
from agent.records.words import describe_action, describe_reason

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1700px; }
h1 { font-size: 20px; margin: 0 0 8px; } h2 { font-size: 16px; margin: 28px 0 8px; }
table { border-collapse: collapse; } td, th { padding: 3px 10px; border-bottom: 1px solid #e3e3e3;
  text-align: left; vertical-align: top; } th { background: #f4f5f7; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.facts td:first-child { color: #666; }
/* the verdict box a replay report puts in its preface (testkit/replay_report.py) */
.verdict { padding: 8px 12px; border-radius: 4px; font-weight: 600; margin: 12px 0; }
.ok { background: #e3f5e6; color: #1d6b30; } .fail { background: #fbe4e4; color: #9b1c1c; }
.none { background: #f0f0f0; color: #555; } .fail ul { font-weight: normal; margin: 6px 0 0; }
.caller { color: #1f6fb4; } .bot { color: #2a9d4b; } .cut { color: #d62728; }
img { max-width: 100%; border: 1px solid #ddd; }
"""


def render_html(
    record: Record,
    *,
    png: bytes,
    wav: bytes | None = None,
    title: str | None = None,
    preface_html: str = "",
) -> str:
    """The report page: header, facts, `preface_html` (already escaped HTML, e.g. a replay's verdict),
    timeline, recording, transcript, actions and per-turn latencies."""
    heading = title or f"Call {record.get('call_id')} ({record.get('bot')})"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(heading)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(heading)}</h1>",
        _facts(record),
        preface_html,
        "<h2>Timeline</h2>",
        f'<img alt="call timeline" src="data:image/png;base64,{base64.b64encode(png).decode()}">',
    ]
    if wav is not None:
        parts += [
            "<h2>Recording</h2><p>left: caller, right: bot</p>",
            f'<audio controls src="data:audio/wav;base64,{base64.b64encode(wav).decode()}"></audio>',
        ]
    parts += [_transcript(record), _actions(record), _latencies(record), "</body></html>"]
    return "\n".join(parts) + "\n"


def _facts(record: Record) -> str:
    tags = ", ".join(str(t) for t in record.get("tags") or []) or "none"
    rows = [
        ("bot", record.get("bot")),
        ("call", record.get("call_id")),
        ("from → to", f"{record.get('from')} → {record.get('to')} ({record.get('direction') or '?'})"),
        ("started", record.get("started_at")),
        ("duration", f"{call_duration_s(record):.1f} s"),
        ("status", f"{record.get('status')}, {record.get('end_reason')}"),
        ("sample rate", f"{record.get('sample_rate')} Hz"),
        ("tags", tags),
    ]
    body = "".join(f"<tr><td>{escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f'<table class="facts">{body}</table>'


def _transcript(record: Record) -> str:
    turns = list(record.get("turns") or [])
    answers = answered_in(turns)
    rows = []
    for i, turn in enumerate(turns):
        role, signals = str(turn.get("role")), turn.get("signals") or {}
        text = _cell(turn.get("text"))
        if turn.get("interrupted"):
            heard = turn.get("heard_text")
            text += f'<br><span class="cut">cut by the caller after: {_cell(heard or "(nothing)")}</span>'
        notes = [f"intent {signals['intent']}"] if signals.get("intent") else []
        notes += [f"sentiment {signals['sentiment']:.2f}"] if signals.get("sentiment") is not None else []
        response = (turn.get("latency_ms") or {}).get("response_ms")
        latency = f"response {response:.0f} ms" if response is not None else ""
        latency = f"answered in {answers[i]:.0f} ms" if i in answers else latency
        who = f'<span class="{escape(role)}">{escape(role)}</span>'
        start = _seconds(float(turn.get("start_ms") or 0) / 1000)
        rows.append([start, who, text, escape(", ".join(notes)), escape(latency)])
    return "<h2>Transcript</h2>" + _table(["time", "who", "text", "intent / sentiment", "latency"], rows)


def _actions(record: Record) -> str:
    rows = [
        [_seconds(seconds_at(record, a.get("at"))), _cell(a.get("type")), _cell(describe_action(a)),
         _cell(describe_reason(a.get("reason")))]
        for a in record.get("actions") or []
    ]  # fmt: skip
    return "<h2>Actions</h2>" + _table(["time", "type", "what", "why"], rows)


_LATENCY_ORDER = ["source", "endpoint_ms", "early_endpoint", "asr_ms", "asr_wait_ms", "asr_speculative_hit",
                  "dialogue_first_text_ms", "tts_first_audio_ms", "response_ms"]  # fmt: skip


def _latencies(record: Record) -> str:
    measured = [(i, t) for i, t in enumerate(record.get("turns") or []) if t.get("latency_ms")]
    keys = [k for k in _LATENCY_ORDER if any(k in t["latency_ms"] for _, t in measured)]
    keys += sorted({k for _, t in measured for k in t["latency_ms"]} - set(keys))
    rows = [
        [str(i), _seconds(float(t.get("start_ms") or 0) / 1000), _cell(_shorten(str(t.get("text") or "")))]
        + [_cell(_number(t["latency_ms"].get(k))) for k in keys]
        for i, t in measured
    ]
    return "<h2>Latency per turn (ms)</h2>" + _table(
        ["turn", "time", "text", *keys], rows, {0, 1, *range(3, 3 + len(keys))}
    )


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], numeric: Container[int] = (0,)) -> str:
    """A table of already-escaped cells; the `numeric` columns right-aligned."""
    if not rows:
        return "<p>none</p>"

    def cls(col: int) -> str:
        return ' class="num"' if col in numeric else ""

    top = "".join(f"<th{cls(c)}>{escape(h)}</th>" for c, h in enumerate(head))
    body = "".join("<tr>" + "".join(f"<td{cls(c)}>{v}</td>" for c, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{top}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return escape("" if value is None else str(value))


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    return f"{value:.0f}" if isinstance(value, int | float) else str(value)


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
