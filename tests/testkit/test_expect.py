"""Replay expectations: YAML `expect:` mappings checked against call records (table-driven)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from testkit.expect import Expectations, Failure, check, expectations_from_record, format_failures

RECORDS = Path(__file__).parents[1] / "agent" / "data" / "records"
SAMPLES = sorted(p.stem for p in RECORDS.glob("*.json"))


def sample(name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((RECORDS / f"{name}.json").read_text())
    return record


def turn(role: str, text: str, start_ms: int, **fields: Any) -> dict[str, Any]:
    """A record turn; `signals` and `latency_ms` default to empty, like a turn the pipeline did not score."""
    base = {"role": role, "text": text, "heard_text": None, "interrupted": False, "start_ms": start_ms}
    return base | {"end_ms": start_ms + 900, "latency_ms": {}, "signals": {}} | fields


def call(*turns: dict[str, Any], actions: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """A call record in the shape of `GET /api/calls/{id}`, started at 12:00:00."""
    numbered = [{"index": i} | t for i, t in enumerate(turns)]
    base = {"started_at": at(0), "end_reason": "caller_hangup", "tags": [], "events": [], "actions": actions}
    return base | {"turns": numbered} | fields


def at(ms: int) -> str:
    return f"2026-11-21T12:00:{ms // 1000:02d}.{ms % 1000:03d}Z"


def bridge(department: str, ms: int, **reason: Any) -> dict[str, Any]:
    payload = [{"action": "bridge", "connect": [{"type": "pstn", "number": 918040001301}]}]
    return {"type": "pcmo", "payload": payload, "reason": reason | {"department": department}, "at": at(ms)}


def timed(response_ms: int) -> dict[str, Any]:
    return {"endpoint_ms": 400, "asr_ms": 250, "response_ms": response_ms}


def scored(intent: str | None, sentiment: float) -> dict[str, Any]:
    return {"intent": intent, "intent_confidence": 1.0 if intent else 0.0, "sentiment": sentiment}


def event(status: str, ms: int) -> dict[str, Any]:
    return {"source": "turns", "status": status, "payload": {"onset_ms": ms}, "at": at(ms)}


def tool(name: str, ms: int, **args: Any) -> dict[str, Any]:
    return {"type": "tool", "payload": {"tool": name, "args": args}, "reason": {}, "at": at(ms)}


ANGRY = call(
    turn("bot", "Thank you for calling. How can I help?", 0),
    turn(
        "caller",
        "What are your opening hours?",
        1000,
        latency_ms=timed(850),
        signals=scored("opening_hours", 0),
    ),
    turn("bot", "We open at nine in the morning.", 3000, interrupted=True, heard_text="We open at"),
    turn("caller", "This is ridiculous!", 4000, latency_ms=timed(1900), signals=scored(None, -0.6)),
    turn("bot", "Sorry about that. Let me look at your order.", 7000),
    turn("caller", "Order 12345, please.", 9000, latency_ms=timed(400), signals=scored("order_status", 0.3)),
    turn("bot", "Order 12345 has shipped.", 11000),
    turn("caller", "Ok.", 12000),
    actions=[
        tool("order_status", 10000, order_id="12345", lang="en"),
        tool("send_sms", 11500, to="caller"),
        {"type": "tag", "payload": {"tags": ["angry"]}, "reason": {"rule": "angry_caller"}, "at": at(13000)},
        bridge("senior", 13000, rule="angry_caller", caller_turn=2, trigger="turn"),
    ],
    tags=["angry"],
    events=[event("barge_in", 4000), event("backchannel", 5000)],
)


@pytest.mark.parametrize(
    ("expect", "failed"),
    [
        ({}, []),
        ({"ends_with": "transfer"}, []),
        ({"ends_with": "any"}, []),
        ({"ends_with": "hangup"}, ["ends_with"]),
        ({"ends_with": "caller"}, ["ends_with"]),
        ({"transfers": [{"department": "senior", "at_turn": 2, "rule": "angry_caller"}]}, []),
        ({"transfers": [{"department": "senior"}]}, []),
        ({"transfers": []}, ["transfers"]),
        ({"transfers": [{"department": "billing"}]}, ["transfers"]),
        ({"transfers": [{"department": "senior", "at_turn": 3}]}, ["transfers"]),
        ({"transfers": [{"department": "senior", "rule": "stuck"}]}, ["transfers"]),
        ({"transfers": [{"department": "senior"}, {"department": "senior"}]}, ["transfers"]),
        ({"tools": [{"name": "order_status", "args": {"order_id": "12345"}}]}, []),
        ({"tools": [{"name": "order_status", "args": {"order_id": 12345}}]}, []),  # YAML number, text arg
        ({"tools": [{"name": "order_status"}, {"name": "send_sms"}]}, []),
        ({"tools": [{"name": "send_sms"}, {"name": "order_status"}]}, ["tools[1]"]),  # order matters
        ({"tools": [{"name": "order_status", "args": {"order_id": "999"}}]}, ["tools[0]"]),
        ({"tools": [{"name": "refund"}, {"name": "send_sms"}]}, ["tools[0]"]),
        ({"no_tools": True}, ["no_tools"]),
        ({"tags": ["angry"]}, []),
        ({"tags": ["angry", "vip"]}, ["tags"]),
        ({"caller_turns": 4}, []),
        ({"caller_turns": 3}, ["caller_turns"]),
        ({"barge_ins": 1}, []),
        ({"barge_ins": 0}, ["barge_ins"]),
        ({"barge_ins": {"at_least": 1}}, []),
        ({"barge_ins": {"at_least": 2}}, ["barge_ins"]),
        ({"within_ms": 1900}, []),
        ({"within_ms": 1000}, ["within_ms"]),
        ({"within_ms": 800}, ["within_ms", "within_ms"]),
        ({"turns": {1: {"contains": "opening hours"}}}, []),
        ({"turns": {1: {"contains": "  OPENING   hours?! "}}}, []),
        ({"turns": {1: {"contains": "closing"}}}, ["turn 1 contains"]),
        ({"turns": {3: {"contains": "order 12345 please"}}}, []),
        ({"turns": {1: {"not_contains": "closing"}}}, []),
        ({"turns": {1: {"not_contains": "Hours"}}}, ["turn 1 not_contains"]),
        ({"turns": {2: {"matches": "ridicul(ous|e)"}}}, []),
        ({"turns": {2: {"matches": "^RIDICUL"}}}, ["turn 2 matches"]),
        ({"turns": {1: {"intent": "opening_hours"}, 2: {"intent": None}}}, []),
        ({"turns": {1: {"intent": "complaint"}}}, ["turn 1 intent"]),
        ({"turns": {1: {"intent": None}}}, ["turn 1 intent"]),
        (
            {
                "turns": {
                    1: {"sentiment": "neutral"},
                    2: {"sentiment": "negative"},
                    3: {"sentiment": "positive"},
                }
            },
            [],
        ),
        ({"turns": {2: {"sentiment": "neutral"}}}, ["turn 2 sentiment"]),
        ({"turns": {4: {"sentiment": "neutral"}}}, ["turn 4 sentiment"]),  # never scored
        ({"turns": {1: {"within_ms": 850}}}, []),
        ({"turns": {1: {"within_ms": 849}}}, ["turn 1 within_ms"]),
        ({"turns": {4: {"within_ms": 5000}}}, ["turn 4 within_ms"]),  # no timed answer
        ({"turns": {1: {"answer_contains": "Nine in the morning"}}}, []),
        ({"turns": {1: {"answer_contains": "ten"}}}, ["turn 1 answer_contains"]),
        ({"turns": {4: {"answer_contains": "bye"}}}, ["turn 4 answer_contains"]),  # the bot never answered
        ({"turns": {3: {"answer_matches": "shipped|delivered"}}}, []),
        ({"turns": {3: {"answer_matches": "delivered"}}}, ["turn 3 answer_matches"]),
        ({"turns": {1: {"interrupted_answer": True}, 2: {"interrupted_answer": False}}}, []),
        ({"turns": {1: {"interrupted_answer": False}}}, ["turn 1 interrupted_answer"]),
        ({"turns": {2: {"interrupted_answer": True}}}, ["turn 2 interrupted_answer"]),
        ({"turns": {5: {"contains": "bye"}}}, ["turn 5"]),
        (
            {"ends_with": "hangup", "caller_turns": 2, "turns": {1: {"intent": "x"}, 9: {}}},
            ["ends_with", "caller_turns", "turn 1 intent", "turn 9"],
        ),  # every failure, not just the first
    ],
)
def test_check(expect: dict[str, Any], failed: list[str]) -> None:
    assert [f.where for f in check(Expectations.model_validate(expect), ANGRY)] == failed


SAID = '"This is ridiculous!"'  # caller turn 2, as failures quote it


@pytest.mark.parametrize(
    ("expect", "failure"),
    [
        ({"turns": {1: {"intent": "complaint"}}},
         Failure("turn 1 intent", "complaint", 'opening_hours (caller said "What are your opening hours?")')),
        ({"turns": {5: {}}}, Failure("turn 5", "a caller turn", "the call had 4 caller turns")),
        ({"transfers": []}, Failure("transfers", "[]", "[senior at caller turn 2 (rule angry_caller)]")),
        ({"transfers": [{"department": "senior", "at_turn": 1}]},
         Failure("transfers", "[senior at caller turn 1]", "[senior at caller turn 2 (rule angry_caller)]")),
        ({"turns": {2: {"sentiment": "neutral"}}},
         Failure("turn 2 sentiment", "neutral", f"negative (-0.6; caller said {SAID})")),
        ({"turns": {1: {"interrupted_answer": False}}},
         Failure("turn 1 interrupted_answer", "not interrupted",
                 'interrupted (bot said "We open at nine in the morning."; caller heard "We open at")')),
        ({"within_ms": 1000},
         Failure("within_ms", "every answer within 1000 ms", f"1900 ms at turn 2 (caller said {SAID})")),
        ({"tools": [{"name": "refund"}]},
         Failure("tools[0]", "refund {}",
                 "tools called: [order_status {'order_id': '12345', 'lang': 'en'}, "
                 "send_sms {'to': 'caller'}]")),
        ({"tags": ["vip"]}, Failure("tags", "vip", "tags ['angry'] (missing vip)")),
        ({"barge_ins": {"at_least": 2}}, Failure("barge_ins", "at least 2", "1")),
    ],
)  # fmt: skip
def test_failure_texts(expect: dict[str, Any], failure: Failure) -> None:
    assert check(Expectations.model_validate(expect), ANGRY) == [failure]


def test_format_failures_one_block_each() -> None:
    failures = check(
        Expectations.model_validate({"ends_with": "hangup", "turns": {1: {"intent": "x"}}}), ANGRY
    )
    assert format_failures(failures) == (
        "✗ ends_with\n    expected: hangup\n    actual:   transfer (end_reason caller_hangup)\n"
        "✗ turn 1 intent\n    expected: x\n"
        '    actual:   opening_hours (caller said "What are your opening hours?")'
    )
    assert format_failures([]) == "✓ all expectations met"


def test_long_caller_text_is_cut_in_failures() -> None:
    record = call(turn("caller", "word " * 40, 0, signals={"intent": "other"}), actions=[])
    [failure] = check(Expectations.model_validate({"turns": {1: {"intent": None}}}), record)
    assert failure.actual.endswith('…")') and len(failure.actual) < 90


def test_scripted_transfer_happens_on_the_latest_caller_turn_before_it() -> None:
    record = copy.deepcopy(ANGRY)
    record["actions"][-1] = bridge("billing", 10000, intent="billing_question", matched_by="example")
    [failure] = check(
        Expectations.model_validate({"transfers": [{"department": "billing", "at_turn": 2}]}), record
    )
    assert failure.actual == "[billing at caller turn 3 (intent billing_question)]"  # turn 3 began at 9 s


def test_ending_is_what_the_bot_did_last() -> None:
    record = copy.deepcopy(ANGRY)
    record["actions"].append(
        {"type": "pcmo", "payload": [{"action": "hangup"}], "reason": {}, "at": at(20000)}
    )
    assert check(Expectations.model_validate({"ends_with": "hangup"}), record) == []
    record["actions"] = [a for a in record["actions"] if a["type"] != "pcmo"]
    assert check(Expectations.model_validate({"ends_with": "caller", "transfers": []}), record) == []


ANGRY_YAML = """
expect:
  ends_with: transfer
  transfers: [{department: senior, at_turn: 3, rule: angry_caller}]
  no_tools: true
  tags: [angry]
  caller_turns: 3
  barge_ins: 0
  within_ms: 1500
  turns:
    1: {contains: "opening hours", intent: opening_hours, sentiment: neutral, within_ms: 1200,
        answer_contains: "nine in the morning", interrupted_answer: false}
    2: {matches: "ridicul(ous|e)", intent: null, sentiment: negative}
    3: {not_contains: "thanks", answer_matches: "colleague"}
"""

ORDER_YAML = """
expect:
  ends_with: hangup
  transfers: []
  tools: [{name: order_status, args: {order_id: 12345}}]
  turns: {2: {contains: "12345"}, 3: {intent: goodbye, sentiment: positive}}
"""


@pytest.mark.parametrize(
    ("name", "text", "failed"),
    [
        ("angry_transfer", ANGRY_YAML, []),
        ("angry_transfer", ANGRY_YAML.replace("at_turn: 3", "at_turn: 2"), ["transfers"]),
        ("angry_transfer", ANGRY_YAML.replace("within_ms: 1200", "within_ms: 400"), ["turn 1 within_ms"]),
        (
            "billing_transfer",
            "expect: {ends_with: transfer, transfers: [{department: billing, at_turn: 1}]}",
            [],
        ),
        ("billing_transfer", "expect: {transfers: [{department: billing, at_turn: 2}]}", ["transfers"]),
        ("billing_transfer", "expect: {turns: {1: {intent: billing_question, sentiment: negative}}}", []),
        ("order_hangup", ORDER_YAML, []),
        ("order_hangup", "expect: {ends_with: caller, no_tools: true}", ["ends_with", "no_tools"]),
    ],
)
def test_sample_records(name: str, text: str, failed: list[str]) -> None:
    expect = Expectations.load(yaml.safe_load(text))
    assert [f.where for f in check(expect, sample(name))] == failed


@pytest.mark.parametrize("name", SAMPLES)
def test_expectations_from_record_round_trip(name: str) -> None:
    record = sample(name)
    written = yaml.safe_dump({"expect": expectations_from_record(record)}, sort_keys=False)
    expect = Expectations.load(yaml.safe_load(written))
    assert check(expect, record) == []
    assert expect.caller_turns and expect.turns[1].contains  # it did fill things in
    record["turns"] = [
        t | {"text": "something else"} if t["role"] == "caller" else t for t in record["turns"]
    ]
    assert "turn 1 contains" in [f.where for f in check(expect, record)]


def test_expectations_from_record_contents() -> None:
    assert SAMPLES == ["angry_transfer", "billing_transfer", "order_hangup"]
    angry, billing, order = (expectations_from_record(sample(name)) for name in SAMPLES)
    assert angry["transfers"] == [{"department": "senior", "at_turn": 3, "rule": "angry_caller"}]
    assert angry["turns"][2] == {
        "contains": "this is ridiculous that is",
        "intent": None,
        "sentiment": "negative",
    }
    assert (angry["ends_with"], angry["tags"], angry["no_tools"]) == ("transfer", ["angry"], True)
    assert (order["ends_with"], order["transfers"]) == ("hangup", [])
    assert order["tools"] == [{"name": "order_status", "args": {"order_id": "12345"}}]
    assert billing["transfers"] == [{"department": "billing", "at_turn": 1}]  # by intent: turn from the time
    assert expectations_from_record(ANGRY)["turns"][4] == {"contains": "ok"}  # an unscored turn: text only


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"ends_with": "transferred"}, "Input should be 'transfer', 'hangup', 'caller' or 'any'"),
        ({"turns": {1: {"sentiment": "angry"}}}, "Input should be 'negative', 'neutral' or 'positive'"),
        ({"turns": {1: {"matches": "ridicul(ous"}}}, "bad regex 'ridicul(ous': missing )"),
        ({"turns": {2: {"answer_matches": "[a-"}}}, "bad regex '[a-'"),
        ({"turns": {0: {"contains": "x"}}}, "caller turns are numbered from 1, got [0]"),
        ({"turns": {1: {"contians": "x"}}}, "turns.1.contians\n  Extra inputs are not permitted"),
        ({"tools": [{"name": "x", "arguments": {}}]}, "tools.0.arguments\n  Extra inputs are not permitted"),
        ({"transfers": [{"at_turn": 1}]}, "transfers.0.department\n  Field required"),
        ({"transfers": [{"department": "senior", "at_turn": 0}]}, "greater than or equal to 1"),
        ({"barge_ins": {"at_most": 1}}, "at_most"),
        ({"within_ms": 0}, "within_ms\n  Input should be greater than or equal to 1"),
        ({"no_tools": True, "tools": [{"name": "x"}]}, "no_tools: true contradicts the tools listed"),
        ({"expect": {}}, "expect\n  Extra inputs are not permitted"),  # the mapping itself, not the document
    ],
)
def test_invalid_expectations(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        Expectations.model_validate(data)
    assert message in str(error.value)
