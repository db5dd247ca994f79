"""Escalation conditions: a small, safe expression language over named signals (no `eval`).

A condition is a string such as `sentiment.rolling < -0.4`, `intent == asked_for_human`,
`turns >= 3 and sentiment.trend < 0`, `not (asked_for_human or intent == complaint)`, or YAML structure
`{all: [...]}`, `{any: [...]}`, `{not: ...}` whose leaves are such strings.

Grammar (strings): `expr := or; or := and ("or" and)*; and := unary ("and" unary)*;
unary := "not" unary | "(" expr ")" | comparison; comparison := SIGNAL [OP value]` with OP one of
`== != < <= > >=` and value a number, `true`/`false`, a bare word or a quoted string. A bare signal
is true when it is truthy (`asked_for_human`). Comparing a missing value (no sentiment yet) is false.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Value = float | bool | str | None
MAX_NESTING = 32  # `not` and parentheses inside each other; deeper would exhaust Python's stack


class ConditionError(ValueError):
    """A condition that does not parse, or names a signal or value that does not exist."""


@dataclass(frozen=True)
class Compare:
    """`signal op value`, or a bare `signal` (op is None)."""

    signal: str
    op: str | None = None
    value: Value = None


@dataclass(frozen=True)
class Not:
    """Negation."""

    arg: Node


@dataclass(frozen=True)
class All:
    """Conjunction."""

    args: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    """Disjunction."""

    args: tuple[Node, ...]


Node = Compare | Not | All | Any_

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|<=|>=|<|>)|(?P<paren>[()])"
    r"|(?P<str>'[^']*'|\"[^\"]*\")|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _tokens(text: str) -> Iterator[tuple[str, str]]:
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ConditionError(f"cannot read {text[pos:].strip()!r} in {text!r}")
        kind = match.lastgroup
        assert kind is not None
        yield kind, match.group(kind)
        pos = match.end()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.items = list(_tokens(text))
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def take(self) -> tuple[str, str]:
        item = self.peek()
        if item is None:
            raise ConditionError(f"{self.text!r} ends too soon")
        self.pos += 1
        return item

    def parse(self) -> Node:
        node = self.or_()
        if self.peek() is not None:
            raise ConditionError(f"unexpected {self.peek()[1]!r} in {self.text!r}")  # type: ignore[index]
        return node

    def or_(self) -> Node:
        args = [self.and_()]
        while self.peek() == ("word", "or"):
            self.take()
            args.append(self.and_())
        return args[0] if len(args) == 1 else Any_(tuple(args))

    def and_(self) -> Node:
        args = [self.unary()]
        while self.peek() == ("word", "and"):
            self.take()
            args.append(self.unary())
        return args[0] if len(args) == 1 else All(tuple(args))

    def unary(self) -> Node:
        kind, text = self.take()
        if (kind, text) in (("word", "not"), ("paren", "(")):
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ConditionError(f"more than {MAX_NESTING} nested `not` or '(' in {self.text!r}")
            try:
                return Not(self.unary()) if text == "not" else self.group()
            finally:
                self.depth -= 1
        if kind != "word" or text in ("and", "or"):
            raise ConditionError(f"expected a signal name, got {text!r} in {self.text!r}")
        if self.peek() is None or self.peek()[0] != "op":  # type: ignore[index]
            return Compare(text)
        op = self.take()[1]
        vkind, vtext = self.take()
        value: Value
        if vkind == "num":
            value = float(vtext)
        elif vkind == "str":
            value = vtext[1:-1]
        elif vkind == "word":
            value = {"true": True, "false": False, "none": None}.get(vtext.lower(), vtext)
        else:
            raise ConditionError(f"expected a value after {op!r}, got {vtext!r} in {self.text!r}")
        return Compare(text, op, value)

    def group(self) -> Node:
        node = self.or_()
        if self.take() != ("paren", ")"):
            raise ConditionError(f"missing ')' in {self.text!r}")
        return node


def parse(condition: str | Mapping[str, Any] | list[Any]) -> Node:
    """A condition (string or all/any/not structure) as a tree; ConditionError says what is wrong."""
    if isinstance(condition, str):
        return _Parser(condition).parse()
    if isinstance(condition, Mapping) and len(condition) == 1:
        ((op, arg),) = condition.items()
        if op in ("all", "any") and isinstance(arg, list) and arg:
            args = tuple(parse(item) for item in arg)
            return All(args) if op == "all" else Any_(args)
        if op == "not":
            return Not(parse(arg))
    raise ConditionError(
        "a condition is a string like 'turns >= 3', or {all: [...]}, {any: [...]}, {not: ...}"
    )


def compares(node: Node) -> Iterator[Compare]:
    """Every comparison in the tree (for validation and explanations)."""
    if isinstance(node, Compare):
        yield node
    elif isinstance(node, Not):
        yield from compares(node.arg)
    else:
        for arg in node.args:
            yield from compares(arg)


def evaluate(node: Node, signals: Mapping[str, Value]) -> bool:
    """True when the signals satisfy the condition. A missing or None signal compares false."""
    if isinstance(node, Not):
        return not evaluate(node.arg, signals)
    if isinstance(node, All):
        return all(evaluate(arg, signals) for arg in node.args)
    if isinstance(node, Any_):
        return any(evaluate(arg, signals) for arg in node.args)
    value = signals.get(node.signal)
    if node.op is None:
        return bool(value)
    if node.op in ("==", "!="):
        return _OPS[node.op](value, node.value)
    if value is None or node.value is None or isinstance(value, str) != isinstance(node.value, str):
        return False
    return _OPS[node.op](value, node.value)
