"""A replay's report: the service's call report with the expectations verdict under its facts."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from agent.records.call_facts import Record
from agent.records.report import write_report
from testkit.expect import Failure


def verdict_html(failures: Sequence[Failure] | None) -> str:
    """The verdict box: None when the call had no expectations, [] when every one held."""
    if failures is None:
        return '<div class="verdict none">no expectations</div>'
    if not failures:
        return '<div class="verdict ok">all expectations met</div>'
    items = "".join(
        f"<li><b>{escape(r.where)}</b>: expected {escape(r.expected)}, got {escape(r.actual)}</li>"
        for r in failures
    )
    return f'<div class="verdict fail">{len(failures)} expectations not met<ul>{items}</ul></div>'


def write_replay_report(
    record: Record,
    out_dir: Path,
    *,
    recording: Path | None = None,
    failures: Sequence[Failure] | None = None,
    title: str | None = None,
) -> dict[str, Path]:
    """`agent.records.report.write_report` with the verdict of `failures` on the page."""
    return write_report(
        record, out_dir, recording=recording, title=title, preface_html=verdict_html(failures)
    )
