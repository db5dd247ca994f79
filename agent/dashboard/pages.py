"""The dashboard's pages as HTML strings (values escaped through agent.dashboard.html)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from agent.dashboard.html import csrf_field, duration, e, link, page, sparkline, table
from agent.records.words import describe_action, describe_reason

LATENCIES = ("endpoint_ms", "asr_ms", "dialogue_first_text_ms", "tts_first_audio_ms", "response_ms")


def no_users_page() -> str:
    """What /dashboard answers (404) while no user is configured."""
    body = (
        "<p>The dashboard has no users yet. Create one with</p>"
        "<pre>hotline passwd sam</pre>"
        "<p>and paste the line it prints under <code>dashboard: users:</code> in config.yaml, then "
        "reload (<code>POST /api/reload</code>) or restart.</p>"
    )
    return page("Dashboard not set up", body)


def login_page(*, next_url: str = "/dashboard", error: str = "") -> str:
    """The login form."""
    problem = f'<p class="error">{e(error)}</p>' if error else ""
    body = (
        f'{problem}<form method="post" action="/dashboard/login" class="login">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label>User <input name="user" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" autocomplete="current-password" required>'
        '</label><button type="submit">Log in</button></form>'
    )
    return page("Log in", body)


def live_row(call: Mapping[str, Any], now: float | None = None) -> dict[str, Any]:
    """One live call as /dashboard/live.json shows it."""
    started = call.get("started_at")
    now = now if now is not None else time.time()
    return {
        "call_id": call.get("call_id"),
        "caller": call.get("caller"),
        "number": call.get("called"),
        "bot": call.get("bot"),
        "worker": call.get("worker"),
        "state": call.get("state"),
        "duration": duration(now - started) if isinstance(started, (int, float)) else "",
        "started_at": started if isinstance(started, (int, float)) else None,
        "tags": list(call.get("tags") or []),
    }


def live_page(calls: Sequence[Mapping[str, Any]], *, user: str, csrf: str) -> str:
    """Live calls by dialled number; dashboard.js keeps the table current from the /dashboard/live socket."""
    rows = [
        [
            link(f"/dashboard/calls/{r['call_id']}", r["call_id"]),
            e(r["number"]),
            e(r["caller"]),
            e(r["bot"]),
            e(r["worker"]),
            e(r["state"]),
            e(r["duration"]),
            e(", ".join(map(str, r["tags"]))),
        ]
        for r in sorted(map(live_row, calls), key=lambda r: (str(r["number"]), r["started_at"] or 0))
    ]
    body = f'<p class="muted" id="live-status">{len(rows)} live call(s).</p>' + table(
        ("call", "number", "caller", "bot", "worker", "state", "duration", "tags"), rows, id_="live-calls"
    )
    return page("Live calls", body, user=user, csrf=csrf)


def calls_page(
    calls: Sequence[Mapping[str, Any]],
    *,
    total: int,
    query: Mapping[str, str],
    page_no: int,
    per_page: int,
    user: str,
    csrf: str,
) -> str:
    """Past calls: a search form, a page of results, previous/next links."""
    form = (
        '<form method="get" action="/dashboard/calls" class="search">'
        f'<input name="search" placeholder="words, number or call id" value="{e(query.get("search"))}">'
        f'<input name="bot" placeholder="bot" value="{e(query.get("bot"))}">'
        f'<input name="status" placeholder="status" value="{e(query.get("status"))}">'
        '<button type="submit">Search</button></form>'
    )
    rows = [
        [
            link(f"/dashboard/calls/{c.get('call_id')}", c.get("call_id")),
            e(c.get("started_at")),
            e(c.get("from")),
            e(c.get("bot")),
            e(c.get("status")),
            e(c.get("end_reason")),
            e(duration(c.get("duration_s"))),
            e(", ".join(map(str, c.get("tags") or []))),
        ]
        for c in calls
    ]
    pages = max(1, -(-total // per_page))
    nav = []
    kept = {k: v for k, v in query.items() if v}
    if page_no > 1:
        nav.append(link("/dashboard/calls?" + urlencode({**kept, "page": page_no - 1}), "← newer"))
    if page_no < pages:
        nav.append(link("/dashboard/calls?" + urlencode({**kept, "page": page_no + 1}), "older →"))
    body = (
        form
        + f'<p class="muted">{total} call(s), page {page_no} of {pages}.</p>'
        + table(("call", "started", "caller", "bot", "status", "end", "duration", "tags"), rows)
        + f'<p class="pager">{" ".join(nav)}</p>'
    )
    return page("Past calls", body, user=user, csrf=csrf)


def call_page(
    record: Mapping[str, Any], *, live: bool, departments: Sequence[str], user: str, csrf: str, flash: str
) -> str:
    """One call: facts, transcript (live events appended by dashboard.js), controls or the aftermath."""
    call_id = str(record.get("call_id"))
    facts = [
        ("call", call_id),
        ("bot", record.get("bot")),
        ("caller", record.get("from")),
        ("called", record.get("to")),
        ("status", "live" if live else record.get("status")),
        ("end reason", record.get("end_reason")),
        ("started", record.get("started_at")),
        ("duration", duration(record.get("duration_s"))),
        ("tags", ", ".join(map(str, record.get("tags") or []))),
        ("caller's language", (record.get("meta") or {}).get("language") or "not detected"),
    ]
    body = "<dl class='facts'>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts) + "</dl>"
    if live:
        body += _controls(call_id, departments, csrf)
    turns = record.get("turns") or []
    sentiments = [
        t["signals"]["sentiment"]
        for t in turns
        if isinstance(t.get("signals"), dict) and "sentiment" in t["signals"]
    ]
    body += f'<h2>Sentiment</h2><div id="sentiment">{sparkline(sentiments)}</div>'
    body += "<h2>Transcript</h2>" + _transcript(turns, live=live, call_id=call_id)
    if not live:
        body += _aftermath(call_id, record)
    return page(f"Call {call_id}", body, user=user, csrf=csrf, flash=flash)


def _controls(call_id: str, departments: Sequence[str], csrf: str) -> str:
    buttons = [
        f'<form method="post" action="/dashboard/calls/{e(call_id)}/transfer" class="inline">'
        f'{csrf_field(csrf)}<input type="hidden" name="department" value="{e(d)}">'
        f'<button type="submit">Transfer to {e(d)}</button></form>'
        for d in departments
    ]
    buttons.append(
        f'<form method="post" action="/dashboard/calls/{e(call_id)}/hangup" class="inline">'
        f'{csrf_field(csrf)}<button type="submit" class="danger">Hang up</button></form>'
    )
    listen = (
        f'<div class="listen"><button type="button" id="listen" data-call="{e(call_id)}">Listen in</button> '
        '<span id="listen-status" class="muted">caller and bot audio, live</span></div>'
    )
    return '<div class="controls">' + " ".join(buttons) + "</div>" + listen


def _transcript(turns: Sequence[Mapping[str, Any]], *, live: bool, call_id: str) -> str:
    items = []
    for t in turns:
        signals = t.get("signals") or {}
        sentiment = signals.get("sentiment") if isinstance(signals, dict) else None
        extra = f' <span class="muted">sentiment {e(sentiment)}</span>' if sentiment is not None else ""
        cut = ' <span class="muted">(interrupted)</span>' if t.get("interrupted") else ""
        items.append(
            f'<li class="{e(t.get("role"))}"><span class="at">{e(t.get("start_ms"))} ms</span> '
            f"<b>{e(t.get('role'))}</b> {e(t.get('text'))}{cut}{extra}{_translation(t)}</li>"
        )
    attrs = f' data-live-call="{e(call_id)}"' if live else ""
    return f'<ol id="transcript"{attrs}>{"".join(items)}</ol><ol id="events" class="events"></ol>'


def _translation(turn: Mapping[str, Any]) -> str:
    """A caller turn's interpretation for the agents, beside the original (or why there is none)."""
    i = turn.get("translation")
    if not isinstance(i, dict):
        return ""
    head = f"{e(i.get('from'))} → {e(i.get('to'))}"
    if i.get("text"):
        return f'<br><span class="translation">[{head}] {e(i.get("text"))}</span>'
    why = e(i.get("unavailable"))
    return f'<br><span class="translation muted">[{head}] no interpretation available ({why})</span>'


def _aftermath(call_id: str, record: Mapping[str, Any]) -> str:
    html = "<h2>Recording</h2>"
    if record.get("recording"):
        html += f'<audio controls preload="none" src="/dashboard/calls/{e(call_id)}/recording"></audio>'
    else:
        html += '<p class="muted">no recording</p>'
    html += (
        f'<h2>Timeline</h2><img class="timeline" alt="timeline of the call" '
        f'src="/dashboard/calls/{e(call_id)}/timeline.png">'
    )
    latency_rows = [
        [e(t.get("index")), e(t.get("text"))] + [e((t.get("latency_ms") or {}).get(k)) for k in LATENCIES]
        for t in record.get("turns") or []
        if t.get("role") == "caller"
    ]
    html += "<h2>Latencies (ms)</h2>" + table(("turn", "caller said", *LATENCIES), latency_rows)
    action_rows = [
        [e(a.get("at")), e(a.get("type")), e(describe_action(a)), e(describe_reason(a.get("reason")))]
        for a in record.get("actions") or []
    ]
    return html + "<h2>Actions</h2>" + table(("at", "type", "what", "why"), action_rows)
