"""Scripted dialogue: intent matching robust to ASR noise, replies, actions, misses, tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.config.bot import BotConfig
from agent.config.settings import load_settings
from agent.dialogue.base import CallContext, DialogueAction, ReplyItem, TextDelta
from agent.dialogue.scripted import IntentMatcher, ScriptedDialogue, TemplateError, normalize, render

REPO = Path(__file__).resolve().parents[2]
BOTS = load_settings(REPO / "config.yaml").bots


@pytest.mark.parametrize(
    ("bot", "said", "intent"),
    [
        ("support_desk", "What's my balance?", "balance"),
        ("support_desk", "how much money is in my account", "balance"),
        ("support_desk", "I was charged twice for the same thing", "billing_question"),
        ("support_desk", "i was charge to ice for the same thing", "billing_question"),  # ASR noise
        ("support_desk", "the app keeps crashing", "technical_problem"),
        ("support_desk", "When are you open on Saturday?", "opening_hours"),
        ("support_desk", "I want to complain", "complaint"),
        ("support_desk", "okay, bye.", "goodbye"),
        ("support_desk", "blah blah weather", None),
        ("support_desk", "", None),
        ("order_line", "Where is my order?", "order_status"),
        ("order_line", "it's 123456", "order_status"),
        ("order_line", "The item arrived broken.", "return_item"),
        ("order_line", "my payment failed", "payment_problem"),
        ("order_line", "what's the weather like", None),
    ],
)
def test_intent_matching(bot: str, said: str, intent: str | None) -> None:
    found = IntentMatcher(BOTS[bot].intents).match(said)
    assert (found.intent.name if found else None) == intent


def test_normalize_and_render() -> None:
    assert normalize("  It's  #42,  OK? ") == "its 42 ok"
    assert (
        render(
            "Order {order_id} is {tool.order_status.status}.",
            {"order_id": 7, "tool": {"order_status": {"status": "packed"}}},
        )
        == "Order 7 is packed."
    )
    with pytest.raises(TemplateError, match=r"tool\.balance\.amount"):
        render("{tool.balance.amount}", {"tool": {}})
    with pytest.raises(TemplateError):
        render("{x.__class__}", {"x": "y"})  # no attribute access from YAML


def ctx(bot: str) -> CallContext:
    return CallContext(
        call_id="c_1", bot_name=bot, bot=BOTS[bot], caller_number="919876543210", called_number="1"
    )


async def collect(dialogue: ScriptedDialogue, text: str) -> list[ReplyItem]:
    return [item async for item in dialogue.reply(text)]


async def test_reply_then_actions_in_order() -> None:
    items = await collect(ScriptedDialogue(ctx("support_desk")), "there's a strange fee on my statement")
    assert items[0] == TextDelta("I'll put you through to our billing team.")
    (action,) = items[1:]
    assert isinstance(action, DialogueAction) and (action.kind, action.department) == ("transfer", "billing")
    assert action.reason["intent"] == "billing_question" and action.reason["confidence"] >= 0.5


async def test_misses_are_counted_and_reset() -> None:
    dialogue = ScriptedDialogue(ctx("support_desk"))
    for n in (1, 2):
        items = await collect(dialogue, "purple monkey dishwasher")
        assert items == [TextDelta(BOTS["support_desk"].phrases.rephrase)]
        assert dialogue.understanding.misunderstood and dialogue.understanding.misunderstood_in_a_row == n
    await collect(dialogue, "what are your opening hours")
    assert (
        dialogue.understanding.intent == "opening_hours"
        and dialogue.understanding.misunderstood_in_a_row == 0
    )


async def test_tool_results_fill_the_reply() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return {"balance": "12,500"}

    items = await collect(
        ScriptedDialogue(ctx("support_desk"), run_tool=run_tool), "check my account balance"
    )
    assert calls == [("account_balance", {"phone": "919876543210"})]  # {caller_number} filled in
    assert isinstance(items[0], DialogueAction) and items[0].kind == "tool"
    assert items[1] == TextDelta("Your available balance is 12,500 rupees.")


async def test_a_tool_without_a_runner_fails_loudly() -> None:
    with pytest.raises(RuntimeError, match="no tool runner"):
        await collect(ScriptedDialogue(ctx("support_desk")), "what is my balance")


async def test_a_department_that_lists_an_intent_takes_the_call() -> None:
    """Call routing: an intent with no transfer of its own goes to the department that lists it."""
    bot = BOTS["support_desk"]
    data = bot.model_dump(exclude_none=True)
    for intent in data["intents"]:
        if intent["name"] == "technical_problem":
            intent.pop("reply")
            intent["actions"] = []
    routed = BotConfig.model_validate(data)
    context = CallContext("c_1", "support_desk", routed, "919876543210", "918040001000")
    items = await collect(ScriptedDialogue(context), "the app does not work")
    assert items[0] == TextDelta(routed.phrases.handoff)
    action = items[1]
    assert isinstance(action, DialogueAction) and (action.kind, action.department) == (
        "transfer",
        "technical",
    )
    assert action.reason["routed_by"] == "department" and action.reason["intent"] == "technical_problem"


async def test_the_order_number_is_asked_for_then_taken_from_the_next_turn() -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    async def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return {
            **args,
            "status": "shipped",
            "eta": "Friday",
            "result": f"Order {args['order_id']} is shipped.",
        }

    dialogue = ScriptedDialogue(ctx("order_line"), run_tool=run_tool)
    first = await collect(dialogue, "where is my order")
    assert first == [TextDelta("Sure. What's your order number? You can also key it in.")] and calls == []
    second = await collect(dialogue, "It's four five one two three.")
    assert calls == [("order_status", {"order_id": "45123"})]
    assert TextDelta("Order 45123 is shipped.") in second
    assert dialogue.pending is None
