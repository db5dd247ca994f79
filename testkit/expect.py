"""Expectations for a replayed call: what operators write under `expect:` in YAML, checked against a
call record (the JSON of `GET /api/calls/{id}`) into a readable list of failures.

Pure functions over dicts, no I/O. Caller turns are numbered 1, 2, 3… in order of appearance; a bot
turn answers the caller turn before it (up to the next caller turn).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from agent.config.base import Strict

Band = Literal["negative", "neutral", "positive"]
NEUTRAL = 0.05  # VADER convention: |compound| <= 0.05 is neutral


class TransferSpec(Strict):
    """One expected transfer: to a department, optionally at a caller turn and by an escalation rule."""

    department: str
    at_turn: int | None = Field(default=None, ge=1)
    rule: str | None = None


class ToolSpec(Strict):
    """One expected tool call; `args` must be a subset of the arguments it was called with."""

    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class AtLeast(Strict):
    """A lower bound instead of an exact count: `{at_least: 1}`."""

    at_least: int = Field(ge=0)


class TurnSpec(Strict):
    """Expectations for one caller turn and the bot's answer to it. `intent: null` means no intent."""

    contains: str | None = None
    not_contains: str | None = None
    matches: str | None = None
    intent: str | None = None
    sentiment: Band | None = None
    within_ms: int | None = Field(default=None, ge=1)
    answer_contains: str | None = None
    answer_matches: str | None = None
    interrupted_answer: bool | None = None

    @field_validator("matches", "answer_matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as e:
                raise ValueError(f"bad regex {value!r}: {e}") from None
        return value


class Expectations(Strict):
    """The `expect:` mapping of a replay scenario. Everything is optional; unknown keys are errors."""

    ends_with: Literal["transfer", "hangup", "caller", "any"] = "any"
    transfers: list[TransferSpec] | None = Field(default=None, description="`[]`: never transferred.")
    tools: list[ToolSpec] = Field(default_factory=list)
    no_tools: bool = False
    tags: list[str] = Field(default_factory=list)
    caller_turns: int | None = Field(default=None, ge=0)
    barge_ins: Annotated[int, Field(ge=0)] | AtLeast | None = None
    within_ms: int | None = Field(default=None, ge=1)
    turns: dict[int, TurnSpec] = Field(default_factory=dict)

    @field_validator("turns")
    @classmethod
    def _turn_numbers(cls, turns: dict[int, TurnSpec]) -> dict[int, TurnSpec]:
        if bad := [n for n in turns if n < 1]:
            raise ValueError(f"caller turns are numbered from 1, got {bad}")
        return turns

    @model_validator(mode="after")
    def _tools_or_none(self) -> Expectations:
        if self.no_tools and self.tools:
            raise ValueError("no_tools: true contradicts the tools listed")
        return self

    @classmethod
    def load(cls, data: Mapping[str, Any]) -> Expectations:
        """From the `expect:` mapping, or from a scenario document that holds one under `expect`."""
        return cls.model_validate(data["expect"] if "expect" in data else data)


@dataclass(frozen=True)
class Failure:
    """One unmet expectation: where in the `expect:` mapping, what it asked, what happened."""

    where: str
    expected: str
    actual: str


@dataclass(frozen=True)
class _Transfer:
    department: str
    at_turn: int | None
    rule: str | None = None
    intent: str | None = None

    def __str__(self) -> str:
        text = self.department + (f" at caller turn {self.at_turn}" if self.at_turn else "")
        if self.rule:
            return f"{text} (rule {self.rule})"
        return f"{text} (intent {self.intent})" if self.intent else text

    def allows(self, happened: _Transfer) -> bool:
        """As an expectation: the same department, and the turn and rule when given."""
        same = self.department == happened.department
        return same and self.at_turn in (None, happened.at_turn) and self.rule in (None, happened.rule)

    def as_expectation(self) -> dict[str, Any]:
        keys = {"department": self.department, "at_turn": self.at_turn, "rule": self.rule}
        return {key: value for key, value in keys.items() if value is not None}


def check(expect: Expectations, record: Mapping[str, Any]) -> list[Failure]:
    """Every expectation the call record does not meet (`[]`: all met), in the order of the mapping."""
    failures: list[Failure] = []
    callers = _caller_turns(record)
    ending = _ending(record)
    if expect.ends_with not in ("any", ending):
        actual = f"{ending} (end_reason {record.get('end_reason')})"
        failures.append(Failure("ends_with", expect.ends_with, actual))
    if expect.transfers is not None:
        wanted = [_Transfer(t.department, t.at_turn, t.rule) for t in expect.transfers]
        happened = _transfers(record)
        if len(wanted) != len(happened) or not all(
            w.allows(h) for w, h in zip(wanted, happened, strict=True)
        ):
            failures.append(Failure("transfers", _list(wanted), _list(happened)))
    failures += _check_tools(expect, _tool_calls(record))
    if missing := [tag for tag in expect.tags if tag not in record.get("tags", [])]:
        actual = f"tags {record.get('tags', [])} (missing {', '.join(missing)})"
        failures.append(Failure("tags", ", ".join(expect.tags), actual))
    if expect.caller_turns is not None and expect.caller_turns != len(callers):
        failures.append(Failure("caller_turns", str(expect.caller_turns), str(len(callers))))
    barge_ins = sum(
        (e.get("source"), e.get("status")) == ("turns", "barge_in") for e in record.get("events", [])
    )
    if isinstance(expect.barge_ins, AtLeast) and barge_ins < expect.barge_ins.at_least:
        failures.append(Failure("barge_ins", f"at least {expect.barge_ins.at_least}", str(barge_ins)))
    elif isinstance(expect.barge_ins, int) and barge_ins != expect.barge_ins:
        failures.append(Failure("barge_ins", str(expect.barge_ins), str(barge_ins)))
    for n, turn in enumerate(callers, 1):
        response_ms = turn.get("latency_ms", {}).get("response_ms")
        if expect.within_ms is not None and response_ms is not None and response_ms > expect.within_ms:
            actual = f"{response_ms} ms at turn {n} (caller said {_quote(turn)})"
            failures.append(Failure("within_ms", f"every answer within {expect.within_ms} ms", actual))
    for n, spec in expect.turns.items():
        if n > len(callers):
            failures.append(
                Failure(f"turn {n}", "a caller turn", f"the call had {len(callers)} caller turns")
            )
        else:
            failures += _check_turn(n, spec, callers[n - 1], _answer(record, callers[n - 1]))
    return failures


def format_failures(failures: list[Failure]) -> str:
    """Failures as text, one block each: `✗ where`, then `expected:` and `actual:` lines."""
    if not failures:
        return "✓ all expectations met"
    return "\n".join(f"✗ {f.where}\n    expected: {f.expected}\n    actual:   {f.actual}" for f in failures)


def expectations_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """A pre-filled `expect:` mapping (plain, YAML-ready) from what happened in a call, for operators to
    trim: ending, transfers, tools (or `no_tools`), tags, caller turns, and per caller turn its first
    words, intent and sentiment band. It always passes `check` against the record it came from."""
    tools = [{"name": name, "args": dict(args)} for name, args in _tool_calls(record)]
    expect: dict[str, Any] = {
        "ends_with": _ending(record),
        "transfers": [t.as_expectation() for t in _transfers(record)],
        **({"tools": tools} if tools else {"no_tools": True}),
        "tags": list(record.get("tags", [])),
    }
    callers = _caller_turns(record)
    expect["caller_turns"] = len(callers)
    turns: dict[int, dict[str, Any]] = {}
    for n, turn in enumerate(callers, 1):
        signals, spec = turn.get("signals") or {}, {}
        if words := _normalise(turn.get("text") or "").split()[:5]:
            spec["contains"] = " ".join(words)
        if "intent" in signals:
            spec["intent"] = signals["intent"]
        if isinstance(signals.get("sentiment"), int | float):
            spec["sentiment"] = _band(signals["sentiment"])
        turns[n] = spec
    expect["turns"] = turns
    return expect


def _check_turn(
    n: int, spec: TurnSpec, turn: Mapping[str, Any], answer: Mapping[str, Any] | None
) -> list[Failure]:
    failures: list[Failure] = []
    text, said, signals = turn.get("text") or "", f"caller said {_quote(turn)}", turn.get("signals") or {}
    answer_text = "" if answer is None else answer.get("text") or ""
    reply = "the bot did not answer" if answer is None else f"bot said {_quote(answer)}"

    def fail(field: str, expected: str, actual: str) -> None:
        failures.append(Failure(f"turn {n} {field}", expected, actual))

    if spec.contains is not None and not _has(text, spec.contains):
        fail("contains", f'"{spec.contains}"', said)
    if spec.not_contains is not None and _has(text, spec.not_contains):
        fail("not_contains", f'no "{spec.not_contains}"', said)
    if spec.matches is not None and not re.search(spec.matches, text, re.IGNORECASE):
        fail("matches", f"/{spec.matches}/", said)
    if "intent" in spec.model_fields_set and signals.get("intent") != spec.intent:
        fail("intent", spec.intent or "no intent", f"{signals.get('intent') or 'no intent'} ({said})")
    score = signals.get("sentiment")
    band = _band(score) if isinstance(score, int | float) else "no sentiment score"
    if spec.sentiment is not None and band != spec.sentiment:
        fail("sentiment", spec.sentiment, f"{band} ({score}; {said})")
    response_ms = turn.get("latency_ms", {}).get("response_ms")
    if spec.within_ms is not None and (response_ms is None or response_ms > spec.within_ms):
        timed = "no timed answer" if response_ms is None else f"{response_ms} ms"
        fail("within_ms", f"an answer within {spec.within_ms} ms", f"{timed} ({said})")
    if spec.answer_contains is not None and (answer is None or not _has(answer_text, spec.answer_contains)):
        fail("answer_contains", f'"{spec.answer_contains}"', reply)
    if spec.answer_matches is not None and (
        answer is None or not re.search(spec.answer_matches, answer_text, re.IGNORECASE)
    ):
        fail("answer_matches", f"/{spec.answer_matches}/", reply)
    cut = answer is not None and bool(answer.get("interrupted"))
    if spec.interrupted_answer is not None and (answer is None or cut != spec.interrupted_answer):
        heard = f'; caller heard "{answer.get("heard_text")}"' if answer is not None and cut else ""
        actual = (
            reply if answer is None else f"{'interrupted' if cut else 'not interrupted'} ({reply}{heard})"
        )
        fail("interrupted_answer", "interrupted" if spec.interrupted_answer else "not interrupted", actual)
    return failures


def _check_tools(expect: Expectations, calls: list[tuple[str, dict[str, Any]]]) -> list[Failure]:
    """Listed calls in order (others may come between), each from where the previous one was found."""
    called = "[" + ", ".join(f"{name} {args}" for name, args in calls) + "]"
    if expect.no_tools and calls:
        return [Failure("no_tools", "no tool calls", f"called {called}")]
    failures, start = [], 0
    for i, spec in enumerate(expect.tools):
        found = [j for j in range(start, len(calls)) if _is_call(spec, *calls[j])]
        if found:
            start = found[0] + 1
        else:
            after = f" after tools[{i - 1}]" if i else ""
            failures.append(
                Failure(f"tools[{i}]", f"{spec.name} {spec.args}{after}", f"tools called: {called}")
            )
    return failures


def _caller_turns(record: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [t for t in record.get("turns", []) if t.get("role") == "caller"]


def _answer(record: Mapping[str, Any], caller: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The first bot turn after a caller turn, unless the caller speaks again first."""
    turns: list[Mapping[str, Any]] = list(record.get("turns", []))
    after = next(i for i, turn in enumerate(turns) if turn is caller) + 1
    for turn in turns[after:]:
        if turn.get("role") == "caller":
            return None
        if turn.get("role") == "bot":
            return turn
    return None


def _pcmo(action: Mapping[str, Any]) -> list[Any]:
    """The PCMO verbs of a `pcmo` action, in order (bridge, play, hangup…)."""
    payload = action.get("payload") if action.get("type") == "pcmo" else None
    return [item.get("action") for item in payload or [] if isinstance(item, Mapping)]


def _is_transfer(action: Mapping[str, Any]) -> bool:
    return _pcmo(action)[:1] == ["bridge"]


def _ending(record: Mapping[str, Any]) -> str:
    """transfer or hangup, whichever the bot did last; caller if it did neither."""
    ending = "caller"
    for action in record.get("actions", []):
        ending = "transfer" if _is_transfer(action) else "hangup" if "hangup" in _pcmo(action) else ending
    return ending


def _transfers(record: Mapping[str, Any]) -> list[_Transfer]:
    transfers = []
    for action in filter(_is_transfer, record.get("actions", [])):
        reason = action.get("reason") or {}
        department = str(reason.get("department", "?"))
        if "rule" in reason:
            transfers.append(_Transfer(department, reason.get("caller_turn"), rule=reason["rule"]))
        else:  # scripted routing: on the latest caller turn that began before the bridge
            at_ms = _ms_between(record.get("started_at"), action.get("at"))
            turn = None if at_ms is None else sum(t.get("start_ms", 0) < at_ms for t in _caller_turns(record))
            transfers.append(_Transfer(department, turn or None, intent=reason.get("intent")))
    return transfers


def _tool_calls(record: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (str(a["payload"].get("tool")), dict(a["payload"].get("args") or {}))
        for a in record.get("actions", [])
        if a.get("type") == "tool" and isinstance(a.get("payload"), Mapping)
    ]


def _is_call(spec: ToolSpec, name: str, args: Mapping[str, Any]) -> bool:
    """The tool named, with every listed argument; scalars also match as text (YAML 12345 == "12345")."""
    return name == spec.name and all(
        key in args
        and (args[key] == value or (not isinstance(value, dict | list) and str(args[key]) == str(value)))
        for key, value in spec.args.items()
    )


def _ms_between(start: Any, end: Any) -> float | None:
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() * 1000
    except (TypeError, ValueError):
        return None


def _normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: what `contains` compares."""
    kept = "".join(c for c in text.lower() if not unicodedata.category(c).startswith("P"))
    return " ".join(kept.split())


def _has(text: str, needle: str) -> bool:
    return _normalise(needle) in _normalise(text)


def _band(score: float) -> str:
    return "negative" if score < -NEUTRAL else "positive" if score > NEUTRAL else "neutral"


def _quote(turn: Mapping[str, Any], limit: int = 60) -> str:
    text = turn.get("text") or ""
    return f'"{text if len(text) <= limit else text[: limit - 1] + "…"}"'


def _list(transfers: list[_Transfer]) -> str:
    return "[" + ", ".join(map(str, transfers)) + "]"
