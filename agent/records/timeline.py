"""The call timeline picture: caller and bot speech, response times, barge-ins and actions on one axis.

Drawn from the call record and, when given, the call's stereo recording (caller left, bot right).
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from agent.records.call_facts import Record, barge_ins, call_duration_s, seconds_at, stream_offset_s
from agent.records.words import action_label

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
