"""The call report: transcript lines, the timeline picture and the self-contained HTML page."""

from __future__ import annotations

import copy
import json
import struct
import wave
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.records.call_facts import call_duration_s, stream_offset_s
from agent.records.report import write_report
from agent.records.timeline import timeline_png
from agent.records.words import describe_action, transcript_text

# A real call record (support_desk, 8 kHz): an angry caller, tagged, supervisors notified, transferred.
SAMPLE = Path(__file__).parents[1] / "data" / "records" / "angry_transfer.json"


@pytest.fixture
def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def synthetic_recording(record: dict[str, Any], path: Path) -> Path:
    """A stereo call recording with a sine burst where each turn is (caller left, bot right), on the
    recording's clock (zero when the stream connected)."""
    rate, offset = int(record["sample_rate"]), stream_offset_s(record)
    pcm = np.zeros((int((call_duration_s(record) - offset) * rate), 2), dtype="<i2")
    for turn in record["turns"]:
        first, last = (int((turn[k] / 1000 - offset) * rate) for k in ("start_ms", "end_ms"))
        channel, tone = (0, 300.0) if turn["role"] == "caller" else (1, 500.0)
        pcm[first:last, channel] = 8000 * np.sin(2 * np.pi * tone * np.arange(last - first) / rate)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk, after checking the signature."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def without_transfer(record: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(record)
    changed["actions"] = [a for a in changed["actions"] if a["type"] != "pcmo"]
    return changed


def interrupted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its third bot turn cut short by the caller, and the barge-in event."""
    changed = copy.deepcopy(record)
    changed["turns"][4].update(interrupted=True, heard_text="Sorry, I didn't", end_ms=16300)
    onset_ms = 16100 - round(1000 * stream_offset_s(record))  # barge-in onsets count from stream start
    changed["events"].append(
        {"source": "turns", "status": "barge_in", "at": record["started_at"],
         "payload": {"onset_ms": onset_ms, "detected_after_ms": 180}}
    )  # fmt: skip
    return changed


def test_transcript_lists_turns_and_actions_in_time_order(record: dict[str, Any]) -> None:
    lines = transcript_text(record).splitlines()
    times = [float(line.split(" s ")[0]) for line in lines]
    assert times == sorted(times)
    assert [line.split()[2] for line in lines] == [
        "action", "bot", "caller", "bot", "caller", "bot", "caller", "action", "action", "bot", "action"
    ]  # fmt: skip
    assert lines[0] == "   0.0 s  action  answer: stream (rule number_routing, bot support_desk)"
    assert lines[2] == "   5.3 s  caller  What are your opening hours? [intent opening_hours, sentiment 0.00]"
    assert lines[5].startswith("  15.3 s  bot     Sorry, I didn't quite get that.")
    assert lines[5].endswith("(answered in 441 ms)")
    rule = "(rule angry_caller at caller turn 3; sentiment.rolling=-0.488, turns=3)"
    assert lines[7] == f"  22.6 s  action  tag angry {rule}"
    assert lines[8] == f"  22.6 s  action  notify supervisors {rule}"
    assert lines[10] == f"  26.1 s  action  transfer → senior {rule}"


def test_interrupted_bot_turn_and_barge_in_in_the_transcript(record: dict[str, Any]) -> None:
    text = transcript_text(interrupted(record))
    assert (
        "Could you say it another way? (answered in 441 ms) (cut by the caller after: Sorry, I didn't)"
        in text
    )
    assert "  16.1 s  event   caller barged in (detected after 180 ms)" in text


def test_routing_and_failed_transfer_reasons_read_plainly(record: dict[str, Any]) -> None:
    start, bridge = record["started_at"], {"action": "bridge", "connect": [{"number": 918040001101}]}
    record["actions"] = [
        {"type": "pcmo", "at": start, "payload": [bridge],
         "reason": {"intent": "billing_question", "confidence": 0.822, "matched_by": "example",
                    "department": "billing"}},
        {"type": "pcmo", "at": start, "payload": [{"action": "hangup"}],
         "reason": {"trigger": "transfer_failed", "department": "billing", "why": "hangup"}},
        {"type": "tool", "at": start, "payload": {"tool": "order_status", "args": {"order_id": "12345"}},
         "reason": {"intent": "order_status"}},
    ]  # fmt: skip
    text = transcript_text(record)
    assert "transfer → billing (intent billing_question, confidence 0.822, matched by example)" in text
    assert "action  hangup (transfer to billing failed: hangup)" in text
    assert "action  tool order_status(order_id=12345) (intent order_status)" in text


def test_timeline_is_a_wide_png_that_follows_the_record(record: dict[str, Any], tmp_path: Path) -> None:
    first = timeline_png(record, None, tmp_path / "a.png").read_bytes()
    width, height = png_size(first)
    assert width >= 1200 and 500 <= height <= 900
    assert timeline_png(record, None, tmp_path / "b.png").read_bytes() == first  # deterministic
    assert timeline_png(without_transfer(record), None, tmp_path / "c.png").read_bytes() != first
    assert timeline_png(interrupted(record), None, tmp_path / "d.png").read_bytes() != first
    wav = synthetic_recording(record, tmp_path / "call.wav")
    assert timeline_png(record, wav, tmp_path / "e.png").read_bytes() != first  # the envelopes


def test_long_calls_get_a_wider_picture(record: dict[str, Any], tmp_path: Path) -> None:
    record["duration_s"] = 120.0
    width, _ = png_size(timeline_png(record, None, tmp_path / "long.png").read_bytes())
    assert width > 3000


class _Page(HTMLParser):
    """What a page loads or runs: its tags, attribute values and style/script text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.code: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1] in ("style", "script"):
            self.code.append(data)


def test_report_files_and_self_contained_page(record: dict[str, Any], tmp_path: Path) -> None:
    record["turns"][3]["text"] = 'I said <script>alert("x")</script> & see https://example.com'
    wav = synthetic_recording(record, tmp_path / "call.wav")
    paths = write_report(record, tmp_path / "report", recording=wav)
    assert set(paths) == {"record", "transcript", "timeline", "html", "recording"}
    assert all(p.parent == tmp_path / "report" and p.exists() for p in paths.values())
    assert paths["recording"].read_bytes() == wav.read_bytes()
    assert json.loads(paths["record"].read_text()) == record
    assert paths["transcript"].read_text() == transcript_text(record)
    page = paths["html"].read_text()
    assert "I said &lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; see https://example.com" in page
    assert "<script" not in page
    assert 'src="data:image/png;base64,' in page
    assert '<audio controls src="data:audio/wav;base64,' in page
    parsed = _Page()
    parsed.feed(page)
    assert not {"script", "link", "iframe", "object"} & set(parsed.tags)
    assert all(value.startswith("data:") for name, value in parsed.attributes if name in ("src", "href"))
    assert not any("http" in value for _, value in parsed.attributes)
    assert not any("http" in code or "url(" in code for code in parsed.code)
    assert '<div class="verdict' not in page  # a stored call has no expectations: no verdict box
    assert "transfer → senior" in page and "rule angry_caller at caller turn 3" in page
    assert '<th class="num">response_ms</th>' in page


def test_supervisor_actions_say_what_was_done() -> None:
    transfer = {
        "type": "supervisor",
        "payload": {"action": "transfer", "department": "billing"},
        "reason": {},
    }
    hangup = {"type": "supervisor", "payload": {"action": "hangup", "department": None}, "reason": {}}
    assert describe_action(transfer) == "supervisor: transfer → billing"
    assert describe_action(hangup) == "supervisor: hangup"
