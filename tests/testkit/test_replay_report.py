"""A replay's report page: the service's call report with the expectations verdict under its facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testkit.expect import Failure
from testkit.replay_report import write_replay_report

SAMPLE = Path(__file__).parents[1] / "agent" / "data" / "records" / "angry_transfer.json"


@pytest.fixture
def record() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SAMPLE.read_text())
    return data


def test_page_shows_the_expectations_verdict(record: dict[str, Any], tmp_path: Path) -> None:
    failures = [
        Failure("turn 3 intent", "complaint", "<none>"),
        Failure("actions", "transfer → senior", "hangup"),
    ]
    paths = write_replay_report(record, tmp_path / "failed", failures=failures, title="Replay of c_6e91")
    html = paths["html"].read_text()
    assert "<h1>Replay of c_6e91</h1>" in html
    assert "recording" not in paths and "<audio" not in html  # no recording given
    assert '<div class="verdict fail">2 expectations not met' in html
    assert "<li><b>turn 3 intent</b>: expected complaint, got &lt;none&gt;</li>" in html
    assert "<li><b>actions</b>: expected transfer → senior, got hangup</li>" in html

    html = write_replay_report(record, tmp_path / "met", failures=[])["html"].read_text()
    assert '<div class="verdict ok">all expectations met</div>' in html


def test_a_scenario_without_expectations_says_so(record: dict[str, Any], tmp_path: Path) -> None:
    html = write_replay_report(record, tmp_path / "none")["html"].read_text()
    assert "no expectations" in html
    assert html.index('class="facts"') < html.index("no expectations") < html.index("<h2>Timeline</h2>")
