"""What happened on a call, for operators: a transcript, a timeline picture and a self-contained page.

Everything is read from the call record (the JSON of `GET /api/calls/{id}`) and, when given, the call's
stereo recording (caller left, bot right). Turn times count from `started_at`; the recording and the
barge-in onsets count from `connected_at`, so they are shifted by the difference.
"""

from __future__ import annotations

import json
import shutil
import wave
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from agent.testing.expect import Failure

Record = Mapping[str, Any]


def seconds_at(record: Record, at: str | None) -> float | None:
    """Seconds from the record's `started_at` to an ISO time such as "2026-11-21T18:13:45.486Z"."""
    start = record.get("started_at")
    if not at or not start:
        return None
    return (_parse_time(at) - _parse_time(start)).total_seconds()


def stream_offset_s(record: Record) -> float:
    """Seconds from `started_at` to `connected_at`: time zero of the recording and of barge-in onsets."""
    return max(0.0, seconds_at(record, record.get("connected_at")) or 0.0)


def call_duration_s(record: Record) -> float:
    """The call's length in seconds: its `duration_s`, or the end of the last thing in it."""
    ends = [float(record.get("duration_s") or 0.0)]
    ends += [float(t.get("end_ms") or 0) / 1000 for t in record.get("turns") or []]
    ends += [seconds_at(record, a.get("at")) or 0.0 for a in record.get("actions") or []]
    return max(ends) or 1.0


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


def answered_in(turns: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Bot turn position → the `response_ms` of the caller turn it answered."""
    answers: dict[int, float] = {}
    pending: float | None = None
    for i, turn in enumerate(turns):
        if turn.get("role") == "caller":
            response = (turn.get("latency_ms") or {}).get("response_ms")
            pending = float(response) if response is not None else None
        elif pending is not None:
            answers[i], pending = pending, None
    return answers


def barge_ins(record: Record) -> list[tuple[float, float]]:
    """Each barge-in as (onset, detection) in seconds from `started_at`."""
    offset, found = stream_offset_s(record), []
    for event in record.get("events") or []:
        payload = event.get("payload") or {}
        if event.get("source") == "turns" and event.get("status") == "barge_in" and "onset_ms" in payload:
            onset = offset + float(payload["onset_ms"]) / 1000
            found.append((onset, onset + float(payload.get("detected_after_ms") or 0) / 1000))
    return found


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


# The timeline's lanes, top to bottom, and their colours.
_LANE_Y = {"caller": 4.0, "response": 3.0, "bot": 2.0, "barge-in": 1.0, "actions": 0.0}
_COLOR = {"caller": "#1f6fb4", "bot": "#2a9d4b", "response": "#7b4fb0", "barge-in": "#d62728"}
_ACTION_COLOR = {"tool": "#138d90", "tag": "#8c6d31", "notify": "#e07b00", "transfer": "#c0392b"}
_DPI = 100
_CHAR_PX = 0.58 * _DPI / 72  # mean glyph width of DejaVu Sans, per point of font size


def timeline_png(record: Record, recording: Path | None, path: Path) -> Path:
    """Draw the call on one time axis (seconds from `started_at`) and write it as a PNG at `path`.

    Lanes: caller and bot speech (turn spans with their first words, the recording's envelope when
    given; interrupted bot turns hatched), response latency (caller turn end → first bot audio),
    barge-ins, and actions (a vertical line through all lanes, labelled). ~1600x700 px, wider for long
    calls (at most 3600 px)."""
    duration = call_duration_s(record)
    width_in = min(max(16.0, duration * 0.55), 36.0)
    fig = Figure(figsize=(width_in, 7.0), dpi=_DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.065, 0.09, 0.92, 0.83))
    px_per_s = width_in * _DPI * 0.92 / duration
    for i, lane in enumerate(_LANE_Y.values()):
        ax.axhspan(lane - 0.5, lane + 0.5, color="#f4f5f7" if i % 2 == 0 else "white", zorder=0, lw=0)
    if recording is not None:
        _draw_envelopes(ax, recording, stream_offset_s(record))
    _draw_turns(ax, record, px_per_s, duration)
    _draw_barge_ins(ax, record)
    _draw_actions(ax, record, px_per_s, duration)
    ax.set_xlim(0, duration)
    ax.set_ylim(-0.55, 4.6)
    ax.set_yticks(list(_LANE_Y.values()), list(_LANE_Y))
    ax.tick_params(axis="y", length=0, labelsize=11)
    ax.set_xlabel("seconds from call start", fontsize=10)
    ax.grid(axis="x", color="#cccccc", lw=0.6, zorder=0.5)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    facts = [record.get("bot"), record.get("call_id"), f"{duration:.1f} s", record.get("end_reason")]
    facts += [f"tags: {', '.join(record['tags'])}"] if record.get("tags") else []
    ax.set_title(" · ".join(str(f) for f in facts if f), loc="left", fontsize=13)
    fig.savefig(path, format="png")
    return path


def _draw_envelopes(ax: Axes, recording: Path, offset_s: float) -> None:
    """Each channel's loudness (RMS per 20 ms, one scale for both) in its lane."""
    with wave.open(str(recording), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{recording}: expected a 16-bit recording")
        channels, rate = wav.getnchannels(), wav.getframerate()
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, channels)
    hop = max(1, rate // 50)
    count = len(frames) // hop
    blocks = frames[: count * hop].astype(np.float32).reshape(count, hop, channels)
    rms = np.sqrt((blocks**2).mean(axis=1))
    level = (rms / max(float(rms.max()), 1.0)) ** 0.6  # flattened: quiet speech stays visible
    level[level < 0.12] = 0.0  # line noise and echo residue: not speech
    times = offset_s + (np.arange(count) + 0.5) * hop / rate
    for channel, lane in enumerate(("caller", "bot")[:channels]):
        y = _LANE_Y[lane]
        ax.fill_between(times, y - 0.3 * level[:, channel], y + 0.3 * level[:, channel],
                        color=_COLOR[lane], alpha=0.55, lw=0, zorder=2)  # fmt: skip


def _draw_turns(ax: Axes, record: Record, px_per_s: float, duration: float) -> None:
    """Turn spans with their first words, and the response latency bars of caller turns."""
    turns = list(record.get("turns") or [])
    for i, turn in enumerate(turns):
        role = "caller" if turn.get("role") == "caller" else "bot"
        y, color = _LANE_Y[role], _COLOR[role]
        start, end = float(turn.get("start_ms") or 0) / 1000, float(turn.get("end_ms") or 0) / 1000
        cut = bool(turn.get("interrupted"))
        span = ((start, y - 0.32), max(end - start, 0.12), 0.64)
        ax.add_patch(Rectangle(*span, facecolor=color, alpha=0.16, edgecolor=color, lw=0.8, zorder=1))
        if cut:  # hatched in red over the envelope
            ax.add_patch(Rectangle(*span, fill=False, edgecolor="#d62728", hatch="///", lw=1.6, zorder=3))
        following = [
            float(t.get("start_ms") or 0) / 1000 for t in turns[i + 1 :] if t.get("role") == turn.get("role")
        ]
        room_px = ((min(following) if following else duration) - start) * px_per_s - 6
        label = ("✂ " if cut else "") + str(turn.get("text") or "")
        ax.text(start, y + 0.35, _first_words(label, room_px, 9), fontsize=9, va="bottom", ha="left",
                color="#222222", zorder=4, clip_on=True)  # fmt: skip
        response = (turn.get("latency_ms") or {}).get("response_ms")
        if role == "caller" and response is not None:
            lane = _LANE_Y["response"]
            ax.add_patch(Rectangle((end, lane - 0.14), float(response) / 1000, 0.28,
                                   color=_COLOR["response"], alpha=0.85, zorder=3))  # fmt: skip
            ax.text(end + float(response) / 2000, lane + 0.2, f"{float(response):.0f} ms", fontsize=9,
                    ha="center", va="bottom", color=_COLOR["response"], zorder=4)  # fmt: skip


def _draw_barge_ins(ax: Axes, record: Record) -> None:
    """A marker at each barge-in's onset, a line to when it was detected."""
    y, color = _LANE_Y["barge-in"], _COLOR["barge-in"]
    found = barge_ins(record)
    if not found:
        ax.text(0.2, y, "none", fontsize=9, color="#999999", va="center")
    for onset, detected in found:
        ax.plot([onset, detected], [y, y], color=color, lw=2, zorder=3)
        ax.plot([onset], [y], marker="v", markersize=10, color=color, zorder=4)
        ax.text(onset, y + 0.2, f"barge-in, seen after {1000 * (detected - onset):.0f} ms", fontsize=9,
                color=color, va="bottom", zorder=4)  # fmt: skip


def _draw_actions(ax: Axes, record: Record, px_per_s: float, duration: float) -> None:
    """A dashed line through all lanes at each action (and transfer outcome), labelled in the actions
    lane on up to three rows so that labels close in time do not overlap."""
    marks: list[tuple[float, str, str]] = []
    for action in record.get("actions") or []:
        at = seconds_at(record, action.get("at"))
        if action.get("type") != "answer" and at is not None:
            label = action_label(action)
            kind = "transfer" if label.startswith("→") else str(action.get("type"))
            marks.append((at, label, _ACTION_COLOR.get(kind, "#333333")))
    for event in record.get("events") or []:
        at = seconds_at(record, event.get("at"))
        if event.get("source") == "transfer" and at is not None:
            marks.append((at, f"transfer {event.get('status')}", _ACTION_COLOR["transfer"]))
    rows_end = [float("-inf")] * 3
    for at, label, color in sorted(marks):
        ax.axvline(at, color=color, ls="--", lw=1.1, alpha=0.8, zorder=2.5)
        width_s = (len(label) * 9 * _CHAR_PX + 14) / px_per_s
        left = at + width_s > duration  # near the end of the call: the label goes left of its line
        start = at - width_s if left else at
        row = next((r for r, end in enumerate(rows_end) if end < start), rows_end.index(min(rows_end)))
        rows_end[row] = start + width_s
        ax.text(at, _LANE_Y["actions"] + 0.27 - 0.27 * row, f"{label} " if left else f" {label}", fontsize=9,
                color=color, va="center", ha="right" if left else "left", zorder=5,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 1})  # fmt: skip


def _first_words(text: str, room_px: float, fontsize: float) -> str:
    """As many whole words of `text` as fit in `room_px`, with "…" when some are left out."""
    fits = int(room_px / (fontsize * _CHAR_PX))
    if len(text) <= fits:
        return text
    shown = ""
    for word in text.split():
        if len(shown) + len(word) + 2 > fits:
            break
        shown += ("" if not shown else " ") + word
    return shown.rstrip(".,;:!?") + "…" if shown else ""


def write_report(
    record: Record,
    out_dir: Path,
    *,
    recording: Path | None = None,
    failures: Sequence[Failure] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """Write out_dir/record.json, transcript.txt, timeline.png and report.html (and recording.wav, a copy
    of `recording`, when given). Returns their paths by name: record, transcript, timeline, html,
    recording. The page embeds the picture and the recording, so it can be mailed on its own."""
    from agent.testing.report_html import render_html  # report_html builds on this module's helpers

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"record": out_dir / "record.json", "transcript": out_dir / "transcript.txt"}
    paths.update(timeline=out_dir / "timeline.png", html=out_dir / "report.html")
    paths["record"].write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["transcript"].write_text(transcript_text(record), encoding="utf-8")
    timeline_png(record, recording, paths["timeline"])
    wav = None
    if recording is not None:
        paths["recording"] = out_dir / "recording.wav"
        if recording.resolve() != paths["recording"].resolve():
            shutil.copyfile(recording, paths["recording"])
        wav = paths["recording"].read_bytes()
    page = render_html(record, png=paths["timeline"].read_bytes(), wav=wav, failures=failures, title=title)
    paths["html"].write_text(page, encoding="utf-8")
    return paths


def _reason_of(action: Mapping[str, Any]) -> Mapping[str, Any]:
    reason = action.get("reason")
    return reason if isinstance(reason, Mapping) else {}


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _fmt(value: Any) -> str:
    """A value for reading: floats to three decimals at most."""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    return str(value)
