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

MAX_DEPTH = 64  # deeper nesting overflows the C parser's stack (a crash, not an error) long before use
MAX_VALUES = 200_000  # values once aliases are expanded: an alias bomb would take hours to validate


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


def _shape_problem(text: str, name: str) -> ConfigProblem | None:
    """What the parser's event stream shows before anything is built: nesting too deep, an alias inside
    its own anchor (an endless structure), or aliases expanding to more values than any config needs."""
    try:
        return _shape_of_events(yaml.parse(text, Loader=_Loader), name)
    except yaml.MarkedYAMLError as exc:
        # PyYAML >= 6.0.3 has a nesting limit of its own, which its scanner may reach before the parser
        # hands us the 64th level (flow collections are scanned ahead): the same problem, said our way.
        if "nesting depth" not in str(exc.problem):
            raise
        mark = exc.problem_mark or exc.context_mark
        return ConfigProblem(
            name, "", f"nested deeper than {MAX_DEPTH} levels", mark.line + 1 if mark else None
        )


def _shape_of_events(events: Iterable[yaml.Event], name: str) -> ConfigProblem | None:
    open_anchors: list[str | None] = []
    sizes: dict[str, int] = {}
    counts = [0]  # values under each open collection, the document's at the bottom
    for event in events:
        line = event.start_mark.line + 1 if event.start_mark else None
        if isinstance(event, yaml.CollectionStartEvent):
            if len(open_anchors) >= MAX_DEPTH:
                return ConfigProblem(name, "", f"nested deeper than {MAX_DEPTH} levels", line)
            open_anchors.append(event.anchor)
            counts.append(1)
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, size = open_anchors.pop(), counts.pop()
            counts[-1] += size
            if anchor is not None:
                sizes[anchor] = size
        elif isinstance(event, yaml.ScalarEvent):
            counts[-1] += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor in open_anchors:
                return ConfigProblem(name, "", f"alias *{event.anchor} is inside its own anchor", line)
            counts[-1] += sizes.get(event.anchor or "", 1)  # an undefined alias: the composer says so
        if sum(counts) > MAX_VALUES:
            return ConfigProblem(name, "", f"more than {MAX_VALUES} values once aliases are expanded", line)
    return None


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
        shape = _shape_problem(text, name)
        if shape is not None:
            raise ConfigError([shape])
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # a safe loader (CSafeLoader/SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError([ConfigProblem(name, "", f"YAML syntax error: {exc.problem}", line)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigProblem(name, "", f"YAML error: {exc}")]) from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:  # PyYAML: `!!int ''` is an IndexError
        what = f"{type(exc).__name__}: {exc}"
        raise ConfigError([ConfigProblem(name, "", f"YAML error: a value cannot be read ({what})")]) from None
    doc = YamlDocument(path=Path(name), data=data if data is not None else {}, root=root)
    duplicates = _duplicate_keys(doc, root)
    if duplicates:
        raise ConfigError(duplicates)
    return doc
