"""The call report on disk: record, transcript, timeline picture and one self-contained page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from agent.records.call_facts import Record
from agent.records.report_html import render_html
from agent.records.timeline import timeline_png
from agent.records.words import transcript_text


def write_report(
    record: Record,
    out_dir: Path,
    *,
    recording: Path | None = None,
    title: str | None = None,
    preface_html: str = "",
) -> dict[str, Path]:
    """Write out_dir/record.json, transcript.txt, timeline.png and report.html (and recording.wav, a copy
    of `recording`, when given). Returns their paths by name: record, transcript, timeline, html,
    recording. The page embeds the picture and the recording, so it can be mailed on its own;
    `preface_html` (already escaped) goes under its facts (a replay puts its expectations verdict there)."""
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
    page = render_html(
        record, png=paths["timeline"].read_bytes(), wav=wav, title=title, preface_html=preface_html
    )
    paths["html"].write_text(page, encoding="utf-8")
    return paths
