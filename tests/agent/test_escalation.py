"""Escalation: the condition language, signals from caller turns, and rule firing (table-driven)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.bot import BotConfig
from agent.config.checks import reference_problems
from agent.config.settings import load_settings
from agent.dialogue.scripted import IntentMatcher
from agent.escalation.conditions import ConditionError, evaluate, parse
from agent.escalation.lint import rule_warnings
from agent.escalation.rules import RuleState, compile_rules
from agent.escalation.signals import SignalTracker, sentiment

REPO = Path(__file__).resolve().parents[2]
BOTS = load_settings(REPO / "config.yaml").bots

SIGNALS: dict[str, Any] = {
    "turns": 3,
    "sentiment.rolling": -0.45,
    "sentiment.trend": -0.3,
    "intent": "billing_question",
    "asked_for_human": False,
    "misunderstood_in_a_row": 2,
    "sentiment": None,
}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("turns >= 3", True),
        ("turns > 3", False),
        ("turns == 3", True),
        ("turns != 3", False),
        ("sentiment.rolling < -0.4", True),
        ("sentiment.rolling <= -0.45", True),
        ("sentiment.rolling < -0.5", False),
        ("intent == billing_question", True),
        ("intent == 'billing_question'", True),
        ('intent != "complaint"', True),
        ("asked_for_human", False),
        ("not asked_for_human", True),
        ("turns >= 3 and sentiment.trend < 0", True),
        ("turns >= 4 or misunderstood_in_a_row >= 2", True),
        ("not (turns >= 3 and sentiment.trend < 0)", False),
        ("turns >= 4 or misunderstood_in_a_row >= 2 and not asked_for_human", True),
        ("sentiment < 0", False),  # no sentiment yet: a comparison with nothing is false
        ("sentiment > -1", False),
        ("missing_signal == 3", False),
        ("intent > 3", False),  # a word and a number never compare
        ({"all": ["turns >= 3", "sentiment.rolling < -0.4"]}, True),
        ({"all": ["turns >= 3", "sentiment.rolling < -0.5"]}, False),
        ({"any": ["turns >= 9", {"not": "asked_for_human"}]}, True),
        ({"not": {"any": ["turns >= 9", "asked_for_human"]}}, True),
    ],
)
def test_conditions_evaluate(condition: Any, expected: bool) -> None:
    assert evaluate(parse(condition), SIGNALS) is expected


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("turns >=", "ends too soon"),
        ("turns >= 3 and", "ends too soon"),
        ("(turns >= 3", "ends too soon"),
        ("(turns >= 3 turns", "missing ')'"),
        ("turns >= 3)", "unexpected ')'"),
        ("3 >= turns", "expected a signal name"),
        ("turns >= >= 3", "expected a value"),
        ("__import__('os')", "unexpected"),
        ("turns; drop", "cannot read"),
        ({"all": []}, "a condition is"),
        ({"xor": ["turns > 1"]}, "a condition is"),
    ],
)
def test_bad_conditions_are_refused(condition: Any, message: str) -> None:
    with pytest.raises(ConditionError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(condition)


def bot_with_rules(rules: list[dict[str, Any]], **escalation: Any) -> BotConfig:
    data = BOTS["support_desk"].model_dump(exclude_none=True)
    data["escalation"] = {"rules": rules, **escalation}
    return BotConfig.model_validate(data)


@pytest.mark.parametrize(
    ("when", "problem"),
    [
        ("moon_phase > 3", "no signal named 'moon_phase'"),
        ("intent == flying", "no intent named 'flying'"),
        ("turns >=", "'turns >=' ends too soon"),
    ],
)
def test_config_validation_names_unknown_signals_and_intents(when: str, problem: str) -> None:
    bot = bot_with_rules([{"name": "r", "when": when, "then": [{"transfer": "senior"}]}])
    problems = reference_problems(bot)
    assert (("escalation", "rules", 0, "when"), problem) in [
        (loc, msg[: len(problem)]) for loc, msg in problems
    ]


def test_builtin_intents_and_yaml_intents_are_valid_in_rules() -> None:
    whens = ["intent == asked_for_human", "intent == cancel", "intent == complaint", "intent == balance"]
    bot = bot_with_rules([{"name": f"r{i}", "when": w, "then": ["hangup"]} for i, w in enumerate(whens)])
    assert reference_problems(bot) == []


def test_rules_fire_by_priority_once_and_with_cooldown() -> None:
    clock = [0.0]
    bot = bot_with_rules(
        [
            {"name": "low", "when": "turns >= 1", "then": [{"say": "Low."}], "priority": 1, "cooldown_s": 10},
            {
                "name": "high",
                "when": "turns >= 2",
                "then": [{"transfer": "senior"}],
                "priority": 9,
                "once": True,
            },
        ]
    )
    state = RuleState(compile_rules(bot), clock=lambda: clock[0])
    fired = state.check({"turns": 1})
    assert fired is not None and fired.rule == "low" and not fired.terminal
    assert fired.signals == {"turns": 1}
    assert state.check({"turns": 1}) is None  # cooling down
    first = state.check({"turns": 2})
    assert first is not None and first.rule == "high" and first.terminal  # higher priority wins
    assert state.check({"turns": 2}) is None  # once; low still cooling down
    clock[0] = 11.0
    again = state.check({"turns": 5})
    assert again is not None and again.rule == "low"


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("Thank you so much, that's great.", 0.5, 1.0),
        ("This is ridiculous, I've called three times.", -1.0, -0.5),
        ("It's terrible, thanks.", -1.0, -0.3),  # a closing thanks is politeness, not joy
        ("What are your opening hours?", -0.1, 0.1),
        ("I am very angry!!!", -1.0, -0.4),
    ],
)
def test_sentiment_of_phone_turns(text: str, low: float, high: float) -> None:
    tracker = SignalTracker(IntentMatcher(BOTS["support_desk"].intents))
    score = tracker.caller_turn(text).sentiment
    assert low <= score <= high, (text, score, sentiment(text))


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Let me talk to a person.", "asked_for_human"),
        ("Can I speak to someone please", "asked_for_human"),
        ("I want a real person", "asked_for_human"),
        ("representative", "asked_for_human"),
        ("What's my balance?", "balance"),
        ("Cancel my subscription", "cancel"),
        ("I was charged twice", "billing_question"),
        ("Purple monkey dishwasher", None),
    ],
)
def test_intents_with_builtins(text: str, intent: str | None) -> None:
    tracker = SignalTracker(IntentMatcher(BOTS["support_desk"].intents))
    assert tracker.caller_turn(text).intent == intent


def test_a_caller_growing_angry_shows_in_rolling_sentiment_and_trend() -> None:
    tracker = SignalTracker(IntentMatcher(BOTS["support_desk"].intents))
    for text in ("Hi, I have a question about my card.", "It still does not work.", "This is useless!"):
        tracker.caller_turn(text, level_dbfs=-30.0)
    snap = tracker.snapshot()
    assert snap["turns"] == 3 and snap["sentiment.trend"] < -0.3 and snap["sentiment.rolling"] < 0
    assert snap["frustration"] and snap["frustration_count"] == 1


def test_counters_repeats_and_raised_voice() -> None:
    tracker = SignalTracker(IntentMatcher(BOTS["support_desk"].intents))
    tracker.caller_turn("Purple monkey dishwasher", level_dbfs=-30.0)
    tracker.caller_turn("Purple monkey dishwasher again", level_dbfs=-29.0)
    assert tracker.snapshot()["misunderstood_in_a_row"] == 2
    assert tracker.last is not None and tracker.last.repeated_question and not tracker.last.raised_voice
    tracker.caller_turn("WHAT ARE YOUR OPENING HOURS", level_dbfs=-18.0)
    snap = tracker.snapshot()
    assert snap["misunderstood_in_a_row"] == 0 and snap["misunderstood"] == 2 and snap["raised_voice"]
    tracker.count("barge_ins")
    tracker.count("dialogue_failures")
    assert tracker.snapshot()["barge_ins"] == 1 and tracker.snapshot()["dialogue_failures"] == 1


@pytest.mark.parametrize(
    ("rules", "warning"),
    [
        ([{"name": "a", "when": "turns >= 3 and turns < 2", "then": ["hangup"]}], "turns cannot be above 3"),
        ([{"name": "a", "when": "turns > 3 and turns <= 3", "then": ["hangup"]}], "turns cannot be above 3"),
        (
            [{"name": "a", "when": "intent == balance and intent == complaint", "then": ["hangup"]}],
            "intent cannot be both 'balance' and 'complaint'",
        ),
        (
            [
                {"name": "first", "when": "turns >= 2", "then": [{"say": "Hm."}], "priority": 5},
                {"name": "second", "when": "turns >= 2", "then": ["hangup"], "priority": 1},
            ],
            "'second' can never fire: 'first' (priority 5) has the same condition",
        ),
    ],
)
def test_lint_finds_rules_that_never_fire(rules: list[dict[str, Any]], warning: str) -> None:
    (found,) = rule_warnings(bot_with_rules(rules))
    assert warning in found


def test_lint_accepts_the_shipped_rules_and_once_rules() -> None:
    assert rule_warnings(BOTS["support_desk"]) == rule_warnings(BOTS["order_line"]) == []
    rules = [
        {"name": "first", "when": "turns >= 2", "then": [{"say": "Hm."}], "priority": 5, "once": True},
        {"name": "second", "when": "turns >= 2 and turns <= 2", "then": ["hangup"], "priority": 1},
    ]
    assert rule_warnings(bot_with_rules(rules)) == []
