"""config.yaml and the bots' YAML (scripts, rules), mutated at random: a valid config, or ConfigError.

Operators edit these files by hand. Whatever they type (a stray bracket, a tab, a YAML tag, a deep or
self-referencing alias, a rule condition that does not parse, a regex that does not compile), loading
gives either settings or the project's own ConfigError whose every problem names the file and the key
(or line): never another exception, never a crash of the interpreter.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from agent.config.settings import Settings, load_settings
from agent.config.yamlfile import ConfigError
from tests.fuzz.conftest import Surface, cases
from tests.fuzz.strategies import json_values

REPO = Path(__file__).resolve().parents[2]
WHOLE_FILE = (
    "file not found",
    "cannot read",
    "YAML error",
    "YAML syntax error",
    "nested deeper",
    "alias *",
    "more than",
)

YAML_TOKENS = [
    ": ", "- ", "&a ", "*a", "&b [*b]", "<<: *a", "!!str ", "!!int ", "!!binary ",
    "!!python/object:os.system ", "!custom ", "{", "}", "[", "]", "'", '"', "\t", "#", "|", ">-",
    "---\n", "...\n", "? ", "%YAML 1.1\n", "~", "null", "yes", "no", "0x1F", "0o17", "1e999", ".nan",
    "-.inf", "2026-01-01", "12:30:00", "\\x00", "\x00", "\x85", "\u2028", "\ufeff", "\x1b[31m",
    "[[[[[[[[", "{{{{", "\n  ", "\n", ": :", "x: &a [*a]",
]  # fmt: skip
CONDITION_TOKENS = [
    "turns", "sentiment.rolling", "intent", "asked_for_human", "misunderstood_in_a_row", "nosuch.signal",
    "==", "!=", "<", "<=", ">", ">=", "and", "or", "not", "(", ")", "3", "-0.4", "1e309", "'quoted'",
    '"x', "true", "none", "complaint", "@", "",
]  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shipped config.yaml and prompts/ (checked valid) to break over and over."""
    root = tmp_path_factory.mktemp("config-fuzz")
    shutil.copy(REPO / "config.yaml", root / "config.yaml")
    shutil.copytree(REPO / "prompts", root / "prompts")
    load_settings(root / "config.yaml")
    return root


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            out += _paths(value, (*prefix, i))
    return out


def _set(data: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


@st.composite
def text_mutation(draw: st.DrawFn, text: str) -> str:
    """Edits as a person slips: spans deleted, tokens typed in, lines doubled, swapped or re-indented."""
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        lines = text.split("\n")
        op = draw(st.sampled_from(["insert", "delete", "line", "double", "swap", "indent", "truncate"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(text))))
        if op == "insert":
            token = draw(st.sampled_from(YAML_TOKENS) | st.text(max_size=12))
            text = text[:at] + token + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(min_value=1, max_value=40)) :]
        elif op == "truncate":
            text = text[:at]
        else:
            i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            if op == "line":
                lines[i] = draw(st.sampled_from(YAML_TOKENS) | st.text(max_size=30))
            elif op == "double":
                lines.insert(i, lines[i])
            elif op == "swap":
                lines[i], lines[j] = lines[j], lines[i]
            else:
                lines[i] = " " * draw(st.integers(min_value=0, max_value=9)) + lines[i].lstrip()
            text = "\n".join(lines)
    return text


condition_text = st.lists(st.sampled_from(CONDITION_TOKENS), max_size=12).map(" ".join)
yaml_values = st.one_of(
    json_values,
    condition_text,
    st.lists(condition_text, max_size=3).map(lambda xs: {"any": xs}),
    st.recursive(condition_text, lambda inner: st.builds(lambda x: {"not": x}, inner), max_leaves=40),
    st.sampled_from([[], {}, "", 10**30, -1, 0, 2.5, True, "hangup", ["hangup"], [{"transfer": "nowhere"}]]),
)


@st.composite
def structure_mutation(draw: st.DrawFn, text: str) -> str:
    """The parsed file with values replaced, keys removed or misspelt, then written back as YAML."""
    data = yaml.safe_load(text)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(_paths(data)))
        op = draw(st.sampled_from(["replace", "replace", "delete", "typo", "add"]))
        if op == "replace" or not path:
            data = _set(data, path, copy.deepcopy(draw(yaml_values)))  # no value shared by two cases
        elif op == "delete":
            data = _set(data, path, None, delete=True)
        elif op == "typo" and isinstance(path[-1], str):
            parent = _get(data, path[:-1])
            parent[path[-1] + draw(st.sampled_from(["_", "s", "x"]))] = parent.pop(path[-1])
        else:
            parent = _get(data, path[:-1])
            if isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = copy.deepcopy(draw(yaml_values))
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(draw(yaml_values)))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


documents = st.one_of(
    st.text(max_size=300),
    json_values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.lists(st.sampled_from(YAML_TOKENS), max_size=30).map("".join),
)


@pytest.mark.surface("config and bot/rule YAML")
def test_any_edit_gives_settings_or_a_config_error(project: Path, surface: Surface) -> None:
    files = [project / "config.yaml", *sorted((project / "prompts").glob("*.yaml"))]
    shipped = {path: path.read_text(encoding="utf-8") for path in files}
    names = {str(path.relative_to(project)) for path in files} | {str(path) for path in files}

    @cases(ci=300)
    @given(target=st.sampled_from(files), data=st.data())
    def one(target: Path, data: st.DataObject) -> None:
        surface()
        original = shipped[target]
        kind = data.draw(st.sampled_from(["text", "text", "structure", "structure", "document"]))
        if kind == "text":
            edited = data.draw(text_mutation(original))
        elif kind == "structure":
            edited = data.draw(structure_mutation(original))
        else:
            edited = data.draw(documents)
        target.write_bytes(edited.encode("utf-8", "surrogatepass"))
        try:
            settings = load_settings(project / "config.yaml")
        except ConfigError as exc:
            event(f"{kind}: ConfigError {exc.problems[0].message[:24]}")
            assert exc.problems
            for problem in exc.problems:
                assert problem.file in names, problem
                assert problem.message, problem
                assert problem.path or problem.line or problem.message.startswith(WHOLE_FILE), problem
        else:
            event(f"{kind}: valid")
            assert isinstance(settings, Settings)
        finally:
            target.write_text(original, encoding="utf-8")

    one()
