"""Call scenarios: the file format and its errors, caller audio, pacing, fixtures made from stored
calls, and `hotline replay` from red to green through the real service."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agent.cli.main import main
from agent.config.yamlfile import ConfigError
from pipelines.voicing import measure_speech
from testkit.fixture_from_call import steps_of, write_fixture
from testkit.scenario import Scenario, Step, load_scenario
from testkit.scenario_run import SERVICE_AHEAD_S, quiet_for, run_scenario, step_audio
from tests.agent.conftest import API_KEY, REPO, WEBHOOK_SECRET, Service

RECORDS = Path(__file__).parents[1] / "agent" / "data" / "records"


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------------ format


def test_every_shipped_fixture_is_a_valid_scenario() -> None:
    files = sorted((REPO / "tests" / "calls").glob("*.yaml"))
    assert len(files) >= 12
    for path in files:
        scenario = load_scenario(path)
        assert scenario.description and scenario.expect is not None, path.name


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"say": "Hi", "dtmf": "1"}, "a step needs exactly one of"),
        ({"silence": 3, "barge_in_ms": 200}, "barge_in_ms only goes with speech"),
        ({"dtmf": "12a"}, "String should match pattern"),
        ({"say": "Hi", "gain_db": 50}, "less than or equal to 20"),
        ({"whisper": "Hi"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_steps_are_refused(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Step.model_validate(step)


def test_scenario_file_errors_name_file_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "bot: support_desk\ncaller:\n  - say: Hi\n  - silence: -2\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{path}:4: caller[1].silence:") and "greater than 0" in str(problem)
    with pytest.raises(ConfigError, match="exactly one of: bot"):
        load_scenario(write(tmp_path / "both.yaml", {"bot": "a", "to": "1", "caller": ["hangup"]}))


def test_caller_audio_from_text_files_and_gain(tmp_path: Path) -> None:
    scenario = Scenario.model_validate({"bot": "support_desk", "caller": [{"say": "Hello there."}]})
    loud = step_audio(scenario, Step(say="Hello there."), 8000)
    quiet = step_audio(scenario, Step(say="Hello there.", gain_db=-20), 8000)
    assert len(loud) == len(quiet)
    assert measure_speech(loud, 8000).level_dbfs - measure_speech(quiet, 8000).level_dbfs == pytest.approx(
        20, abs=0.5
    )
    assert step_audio(scenario, Step(say="Hello there."), 16000) != loud  # made at the call's rate
    real = step_audio(scenario, Step(asterisk="en/vm-goodbye"), 8000)
    assert 0.5 < len(real) / 16000 < 2.0


def test_a_faster_line_waits_longer_for_the_bot_to_finish() -> None:
    assert quiet_for(1.0) == pytest.approx(0.8)
    assert quiet_for(math.inf) == pytest.approx(0.8 + SERVICE_AHEAD_S)
    assert quiet_for(1.0) < quiet_for(2.0) < quiet_for(math.inf)


# -------------------------------------------------------------------------- fixtures from calls


def test_steps_of_a_stored_call_keep_order_barge_ins_and_keypad() -> None:
    record = json.loads((RECORDS / "angry_transfer.json").read_text())
    steps = steps_of(record, ["a/turn1.wav", "a/turn2.wav", "a/turn3.wav"])
    assert [s["audio"] for s in steps if "audio" in s] == ["a/turn1.wav", "a/turn2.wav", "a/turn3.wav"]
    assert not any("barge_in_ms" in s for s in steps)  # this caller always waited for the bot
    # The same caller, had they cut the first answer 1.5 s in, and keyed digits at the end:
    answer = [t for t in record["turns"] if t["role"] == "bot"][1]
    second = [t for t in record["turns"] if t["role"] == "caller"][1]
    second["start_ms"] = answer["start_ms"] + 1500
    record["events"].append(
        {"source": "dtmf", "status": "digits", "payload": {"dtmf": "42"}, "at": record["ended_at"]}
    )
    steps = steps_of(record, ["1.wav", "2.wav", "3.wav"])
    assert steps[1] == {"audio": "2.wav", "barge_in_ms": 1500 - 150}
    assert steps[3:] == [{"dtmf": "42"}, {"hangup": True}]


# ------------------------------------------------------------------ through the real service


async def test_a_stored_call_becomes_a_fixture_that_replays_green(service: Service, tmp_path: Path) -> None:
    scenario = Scenario.model_validate(
        {
            "bot": "support_desk",
            "speed": 1,  # real time, like a production call (flat-out audio back-dates a turn's start)
            "caller": [{"say": "I was charged twice for the same payment."}],
        }
    )
    first = await run_scenario(
        scenario,
        url=service.url,
        secret=WEBHOOK_SECRET,
        api_key=API_KEY,
        out_dir=tmp_path / "first",
        settings=service.settings,
    )
    target = tmp_path / "fixtures" / "charged_twice.yaml"
    target.parent.mkdir()
    await write_fixture(service.url, API_KEY, first.call_id, target)
    written = yaml.safe_load(target.read_text())
    assert written["bot"] == "support_desk" and written["caller"][0] == {"audio": "charged_twice/turn1.wav"}
    assert written["expect"]["transfers"] == [{"department": "billing", "at_turn": 1}]
    clip = target.parent / "charged_twice" / "turn1.wav"
    assert 1.0 < clip.stat().st_size / 16000 < 5.0  # the caller's words, 8 kHz mono, with margins
    again = await run_scenario(
        load_scenario(target), url=service.url, secret=WEBHOOK_SECRET, api_key=API_KEY,
        out_dir=tmp_path / "again",
        settings=service.settings, speed="max",
    )  # fmt: skip
    assert again.passed, again.failures
    assert again.call_id != first.call_id and set(again.report) >= {"html", "timeline", "transcript"}


def test_hotline_replay_goes_from_red_to_green(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What README tells a new user: replay a scenario, see the failure, fix the expectation, replay."""
    scenario = tmp_path / "hours.yaml"
    data = {
        "description": "Opening hours.",
        "bot": "support_desk",
        "speed": "max",
        "caller": [{"say": "What are your opening hours?"}],
        "expect": {"turns": {1: {"intent": "opening_hours", "answer_contains": "nine at night"}}},
    }
    write(scenario, data)
    config = _config_copy(tmp_path)
    out = tmp_path / "report"
    assert main(["--config", str(config), "replay", str(scenario), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert '✗ turn 1 answer_contains\n    expected: "nine at night"' in printed
    assert "nine in the morning" in printed  # the transcript shows what the bot did say
    assert (out / "timeline.png").read_bytes().startswith(b"\x89PNG") and (out / "report.html").is_file()

    data["expect"]["turns"][1]["answer_contains"] = "nine in the morning"
    write(scenario, data)
    assert main(["--config", str(config), "replay", str(scenario), "--out", str(out)]) == 0
    assert "✓ every expectation met" in capsys.readouterr().out


def test_hotline_replay_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOTLINE_API_KEY", raising=False)
    hours = write(tmp_path / "hours.yaml", {"bot": "support_desk", "caller": [{"say": "Hi."}]})
    for where in (["--url", "http://127.0.0.1:9"], ["--record-from", "http://127.0.0.1:9", "c_1"]):
        assert main(["--config", str(REPO / "config.yaml"), "replay", str(hours), *where]) == 2
        assert "set HOTLINE_API_KEY" in capsys.readouterr().err  # before any call is placed
    wav = tmp_path / "call.wav"
    wav.write_bytes(b"")
    assert main(["--config", str(REPO / "config.yaml"), "replay", str(wav)]) == 2
    assert "needs --bot NAME" in capsys.readouterr().err
    bad = write(tmp_path / "bad.yaml", {"bot": "support_desk", "caller": [{"sing": "la"}]})
    assert main(["--config", str(REPO / "config.yaml"), "replay", str(bad)]) == 2
    assert "caller[0].sing: unknown key" in capsys.readouterr().err


def _config_copy(tmp_path: Path) -> Path:
    """The shipped config and bots, with storage under tmp_path (replay keeps its records apart anyway)."""
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    data = yaml.safe_load((REPO / "config.yaml").read_text())
    data["storage"] = {"url": f"sqlite:///{tmp_path / 'h.db'}", "data_dir": str(tmp_path / "var")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data))
    return tmp_path / "config.yaml"


def test_gain_is_clipped_not_wrapped() -> None:
    scenario = Scenario.model_validate({"bot": "support_desk", "caller": [{"say": "Hi."}]})
    pcm = step_audio(scenario, Step(say="Hi.", gain_db=20), 8000)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert samples.max() == 32767 and samples.min() == -32768
