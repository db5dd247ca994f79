"""Config validation: every mistake names its file, key path and line; `hotline check` exits 1."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.config.base import normalize_number
from agent.config.settings import load_settings
from agent.config.yamlfile import ConfigError

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped config.yaml and prompts/ to break."""
    shutil.copy(REPO / "config.yaml", tmp_path / "config.yaml")
    shutil.copytree(REPO / "prompts", tmp_path / "prompts")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def problems(project: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(project / "config.yaml")
    return [str(p) for p in info.value.problems]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def test_shipped_config_is_valid_and_routes_numbers() -> None:
    settings = load_settings(REPO / "config.yaml")
    assert set(settings.bots) == {"support_desk", "order_line", "international_desk"}
    assert settings.bot_for_number("+91 80 4000 1000") is settings.bots["support_desk"]
    assert settings.bot_for_number("918040002000") is settings.bots["order_line"]
    assert settings.bot_for_number("000") is None
    billing = settings.bots["support_desk"].departments["billing"]
    assert billing.numbers == ["918040001101", "918040001102"] and billing.ring_type == "group"


def test_check_command_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(REPO / "config.yaml"), "check"]) == 0
    assert "3 bots are valid" in capsys.readouterr().out


def test_typo_in_bot_key_names_file_key_and_line(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bot = project / "prompts" / "support_desk.yaml"
    edit(bot, "    ring_type: group\n    timeout: 30", "    ring_typ: group\n    timeout: 30")
    line = line_of(bot, "ring_typ:")
    assert main(["--config", str(project / "config.yaml"), "check"]) == 1
    err = capsys.readouterr().err
    assert f"prompts/support_desk.yaml:{line}: departments.billing.ring_typ: unknown key" in err
    assert "1 problem(s) found." in err


def test_yaml_syntax_error_gives_line(project: Path) -> None:
    bot = project / "prompts" / "order_line.yaml"
    edit(bot, "  returns:\n", "  returns:\n   - [unclosed\n")
    (found,) = problems(project)
    assert found.startswith("prompts/order_line.yaml:") and "YAML syntax error" in found


def test_unknown_department_in_an_action(project: Path) -> None:
    bot = project / "prompts" / "support_desk.yaml"
    edit(bot, "      - transfer: technical", "      - transfer: technicl")
    (found,) = problems(project)
    line = line_of(bot, "transfer: technicl")
    assert found == (
        f"prompts/support_desk.yaml:{line}: intents[2].actions[0].transfer: "
        "no department 'technicl' (departments: billing, senior, technical)"
    )


def test_several_problems_reported_at_once(project: Path) -> None:
    edit(project / "config.yaml", '"+91 80 4000 2000": order_line', '"+91 80 4000 2000": order_lines')
    edit(project / "prompts" / "support_desk.yaml", "  timeout_s: 3\n", "  timeout_s: -3\n")
    edit(project / "prompts" / "order_line.yaml", "voice_quality: 16000", "voice_quality: 44100")
    found = problems(project)
    assert any("tools[0].timeout_s: Input should be greater than 0" in p for p in found)
    assert any("order_line.yaml" in p and "stream.voice_quality" in p for p in found)
    assert any("config.yaml" in p and "no bot named 'order_lines'" in p for p in found)


def test_duplicate_keys_are_errors(project: Path) -> None:
    bot = project / "prompts" / "order_line.yaml"
    edit(bot, "language: en\n", "language: en\nlanguage: hi\n")
    (found,) = problems(project)
    assert found == f"prompts/order_line.yaml:{line_of(bot, 'language: hi')}: language: duplicate key"


def test_bad_regex_and_action_shape(project: Path) -> None:
    bot = project / "prompts" / "order_line.yaml"
    edit(bot, r"patterns: ['\b\d{5,10}\b', '^\[keypad\]']", "patterns: ['(unclosed']")
    edit(bot, "      - transfer: returns\n", "      - transfer: returns\n        hangup: true\n")
    found = problems(project)
    assert any("intents[0].patterns: bad regular expression" in p for p in found)
    assert any("intents[1].actions[0]: an action needs exactly one of" in p for p in found)


def test_storage_url_from_the_environment_wins_over_the_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql://hotline:pw@db.internal:5432/hotline"
    monkeypatch.setenv("HOTLINE_STORAGE_URL", url)
    assert load_settings(project / "config.yaml").service.storage.url == url
    monkeypatch.delenv("HOTLINE_STORAGE_URL")
    assert load_settings(project / "config.yaml").service.storage.url == "sqlite:///var/hotline.db"


def test_a_bad_storage_url_from_the_environment_is_a_problem_that_hides_it(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTLINE_STORAGE_URL", "mysql://hotline:s3cret@db/hotline")
    (found,) = problems(project)
    assert "HOTLINE_STORAGE_URL must be sqlite:///path.db or postgresql://" in found
    assert "s3cret" not in found


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(tmp_path / "nope.yaml"), "check"]) == 1
    assert "nope.yaml: file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("+91 80 4000 1000", "918040001000"), (918040001000, "918040001000"), ("(080) 12-34", "0801234")],
)
def test_normalize_number(raw: str | int, expected: str) -> None:
    assert normalize_number(raw) == expected


@pytest.mark.parametrize("raw", ["abc", "", True, None, "+", "12"])
def test_normalize_number_rejects(raw: object) -> None:
    with pytest.raises(ValueError):
        normalize_number(raw)
