"""YAML files that non-programmers edit: load them, and point at the exact file, key and line of a mistake."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

try:  # libyaml is several times faster; fall back to pure Python where it is missing
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake: which file, which key (dotted path), which line when the YAML tells, and what is wrong."""

    file: str
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        key = f" {self.path}:" if self.path else ""
        return f"{where}:{key} {self.message}"


class ConfigError(Exception):
    """Every problem found in the configuration, each naming its file and key."""

    def __init__(self, problems: Sequence[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def format_path(loc: Iterable[str | int]) -> str:
    """('departments', 'billing', 'numbers', 0) → 'departments.billing.numbers[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass
class YamlDocument:
    """A parsed YAML file: its data, and its node tree to find the line of any key path."""

    path: Path
    data: Any
    root: yaml.Node | None

    @property
    def name(self) -> str:
        """The file name as shown in error messages."""
        return str(self.path)

    def line_of(self, loc: KeyPath) -> int | None:
        """1-based line of the deepest node along `loc` that exists in the file."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for part in loc:
            child = _child(node, part)
            if child is None:
                break
            node = child
            line = node.start_mark.line + 1
        return line

    def problem(self, loc: KeyPath, message: str) -> ConfigProblem:
        """A ConfigProblem at `loc` in this file."""
        return ConfigProblem(self.name, format_path(loc), message, self.line_of(loc))

    def validate(self, model: type[M], *, context: dict[str, Any] | None = None) -> M:
        """Validate the data against a pydantic model; raise ConfigError with file, key path and line."""
        try:
            return model.model_validate(self.data, context=context)
        except ValidationError as exc:
            raise ConfigError([self.problem(tuple(e["loc"]), _message(e)) for e in exc.errors()]) from None


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key (check the spelling; see the example files for the keys allowed here)"
    if error["type"] == "missing":
        return "required key is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _child(node: yaml.Node | None, part: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                # A pydantic error on the key itself (extra key) is best shown at the key's line.
                return value if not _is_leafless(value) else key
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None


def _is_leafless(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag.endswith(":null")


def _duplicate_keys(doc: YamlDocument, node: yaml.Node | None, loc: KeyPath = ()) -> list[ConfigProblem]:
    """PyYAML silently keeps the last of two equal keys; an operator deserves to hear about it."""
    problems: list[ConfigProblem] = []
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = str(key.value)
            if name in seen:
                problems.append(
                    ConfigProblem(
                        doc.name, format_path((*loc, name)), "duplicate key", key.start_mark.line + 1
                    )
                )
            seen.add(name)
            problems.extend(_duplicate_keys(doc, value, (*loc, name)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            problems.extend(_duplicate_keys(doc, item, (*loc, i)))
    return problems


def load_yaml(path: Path, *, display_name: str | None = None) -> YamlDocument:
    """Read and parse a YAML file; syntax errors and duplicate keys become ConfigError with the line."""
    name = display_name or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(name, "", f"cannot read: {exc}")]) from None
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # a safe loader (CSafeLoader/SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigProblem(name, "", f"YAML syntax error: {exc.problem}", line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(name, "", f"YAML error: {exc}")]) from None
    doc = YamlDocument(path=Path(name), data=data if data is not None else {}, root=root)
    duplicates = _duplicate_keys(doc, root)
    if duplicates:
        raise ConfigError(duplicates)
    return doc
