"""ToolBox: tool definitions for the LLM, call actions, and HTTP tools against a real local backend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.bot import BotConfig, HttpTool, Intent
from agent.config.settings import load_settings
from agent.dialogue.base import CallContext, TextDelta
from agent.dialogue.scripted import ScriptedDialogue
from agent.dialogue.tools import ToolBox, ToolError
from testkit.backends import FakeToolBackend

REPO = Path(__file__).resolve().parents[2]
BOTS = load_settings(REPO / "config.yaml").bots
TOKEN = "tok-3f9a-secret"


@pytest.fixture(scope="module")
def _backend() -> Iterator[FakeToolBackend]:
    with FakeToolBackend() as backend:
        yield backend


@pytest.fixture
def backend(_backend: FakeToolBackend) -> FakeToolBackend:
    _backend.delay_s = 0.0
    return _backend


def with_tools(bot: BotConfig, backend: FakeToolBackend, *extra: HttpTool) -> BotConfig:
    return backend.point(bot.model_copy(update={"tools": [*bot.tools, *extra]}))


@pytest.fixture
async def orders(backend: FakeToolBackend) -> AsyncIterator[ToolBox]:
    extra = [
        HttpTool(
            name="open_ticket",
            description="Open a support ticket.",
            parameters={
                "type": "object",
                "properties": {"summary": {"type": "string"}},
                "required": ["summary"],
            },
            method="POST",
            url=f"{backend.base_url}/tickets",
            result="Ticket {ticket_id} is open.",
        ),
        HttpTool(
            name="any_order",
            description="Order status by any id (no pattern in its schema).",
            parameters={"type": "object", "properties": {"order_id": {"type": "string"}}},
            url=f"{backend.base_url}/orders/{{order_id}}",
            result="Order {order_id} is {status}.",
        ),
        HttpTool(
            name="broken",
            description="Answers a JSON list.",
            url=f"{backend.base_url}/not-json",
            result="never",
            timeout_s=0.3,
        ),
    ]
    async with ToolBox(with_tools(BOTS["order_line"], backend, *extra), env={}) as toolbox:
        yield toolbox


def test_specs_offer_departments_by_name_only() -> None:
    specs = {s["function"]["name"]: s["function"] for s in ToolBox(BOTS["support_desk"], env={}).specs()}
    assert list(specs) == ["transfer_to_department", "end_call", "play_hold_music", "account_balance"]
    department = specs["transfer_to_department"]["parameters"]["properties"]["department"]
    assert department["enum"] == ["billing", "technical", "senior"]
    assert "billing: Charges, fees" in specs["transfer_to_department"]["description"]
    assert "never a phone number" in specs["transfer_to_department"]["description"]
    assert specs["end_call"]["parameters"]["required"] == ["reason"]
    assert specs["account_balance"]["parameters"] == BOTS["support_desk"].tools[0].parameters
    assert specs["account_balance"]["description"] == BOTS["support_desk"].tools[0].description


def test_a_bot_without_departments_offers_no_transfer() -> None:
    bot = BOTS["support_desk"].model_copy(update={"departments": {}})
    names = [s["function"]["name"] for s in ToolBox(bot, env={}).specs()]
    assert "transfer_to_department" not in names


def test_call_actions_and_refusals() -> None:
    toolbox = ToolBox(BOTS["support_desk"], env={})
    action = toolbox.action_for("transfer_to_department", {"department": "Billing"}, {"by": "llm"})
    assert (action.kind, action.department, action.reason) == (
        "transfer",
        "billing",
        {"by": "llm", "tool": "transfer_to_department"},
    )
    for asked in ("+91 80 4000 1101", "918040001101", "sales", None, 7):
        with pytest.raises(ToolError, match="departments: billing, technical, senior") as error:
            toolbox.action_for("transfer_to_department", {"department": asked}, {})
        assert error.value.kind == "bad_args"
    hangup = toolbox.action_for("end_call", {"reason": "caller said bye"}, {})
    assert (hangup.kind, hangup.reason["why"]) == ("hangup", "caller said bye")
    assert toolbox.action_for("play_hold_music", {}, {}).kind == "hold_music"
    with pytest.raises(ToolError) as unknown:
        toolbox.action_for("dial_number", {"number": "911"}, {})
    assert unknown.value.kind == "unknown_tool"


def test_fillers() -> None:
    order_line = ToolBox(BOTS["order_line"], env={})
    assert order_line.filler_for("order_status") == "Let me look that order up."
    bot = BOTS["order_line"].model_copy(
        update={"tools": [t.model_copy(update={"filler": None}) for t in BOTS["order_line"].tools]}
    )
    assert ToolBox(bot, env={}).filler_for("order_status") == bot.phrases.filler
    assert order_line.filler_for("end_call") is None and order_line.filler_for("nope") is None


async def test_an_order_lookup(orders: ToolBox, backend: FakeToolBackend) -> None:
    before = len(backend.requests)
    result = await orders.run("order_status", {"order_id": "12345"})
    assert result == {
        "order_id": "12345",
        "status": "shipped",
        "eta": "Friday",
        "result": "Order 12345 is shipped, expected on Friday.",
    }
    assert backend.requests[before].raw_path == "/orders/12345"


async def test_arguments_are_url_encoded(orders: ToolBox, backend: FakeToolBackend) -> None:
    with pytest.raises(ToolError) as error:
        await orders.run("any_order", {"order_id": "../accounts/1 x?y=#"})
    assert (error.value.kind, error.value.status) == ("http_status", 404)
    assert backend.requests[-1].raw_path == "/orders/..%2Faccounts%2F1%20x%3Fy%3D%23"


@pytest.mark.parametrize("order_id", ["..", ".", ""])
async def test_a_path_placeholder_cannot_be_a_dot_segment(
    orders: ToolBox, backend: FakeToolBackend, order_id: str
) -> None:
    before = len(backend.requests)
    with pytest.raises(ToolError, match=r"order_id cannot be .* in the URL path") as error:
        await orders.run("any_order", {"order_id": order_id})
    assert error.value.kind == "bad_args" and len(backend.requests) == before  # never `/orders/..` = `/`


async def test_only_whole_path_segments_are_refused(backend: FakeToolBackend) -> None:
    split = HttpTool(
        name="split",
        description="A segment made of two placeholders; another in the query.",
        parameters={"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}},
        url=f"{backend.base_url}/orders/{{a}}{{b}}?ref={{a}}",
        result="Order {order_id} is {status}.",
    )
    async with ToolBox(with_tools(BOTS["order_line"], backend, split), env={}) as toolbox:
        with pytest.raises(ToolError, match=r"a, b cannot be '\.\.'"):
            await toolbox.run("split", {"a": ".", "b": "."})
        assert (await toolbox.run("split", {"a": "123", "b": "45"}))["status"] == "shipped"
        assert backend.requests[-1].raw_path == "/orders/12345" and backend.requests[-1].query == {
            "ref": "123"
        }
        with pytest.raises(ToolError) as not_found:  # `..x` is a name, not a step up: it reaches the backend
            await toolbox.run("split", {"a": "..", "b": "x"})
        assert not_found.value.kind == "http_status" and backend.requests[-1].raw_path == "/orders/..x"


async def test_bad_arguments_never_reach_the_backend(orders: ToolBox, backend: FakeToolBackend) -> None:
    before = len(backend.requests)
    for args, where in (
        ({}, "'order_id' is a required property"),
        ({"order_id": "../accounts/1"}, "does not match"),  # the shipped schema: digits only
        ({"order_id": 12345}, "order_id: 12345 is not"),
    ):
        with pytest.raises(ToolError, match=where) as error:
            await orders.run("order_status", args)
        assert error.value.kind == "bad_args"
    assert len(backend.requests) == before


async def test_unknown_tools(orders: ToolBox) -> None:
    for name in ("transfer_to_department", "launch_rocket"):
        with pytest.raises(ToolError) as error:
            await orders.run(name, {})
        assert error.value.kind == "unknown_tool"


async def test_env_headers_carry_secrets_the_errors_never_show(backend: FakeToolBackend) -> None:
    bot = with_tools(BOTS["support_desk"], backend)
    async with ToolBox(bot, env={"ACME_API_TOKEN": TOKEN}) as toolbox:
        result = await toolbox.run("account_balance", {"phone": "919876543210"})
        assert result["result"] == "Your available balance is 12,500 rupees."
        assert backend.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"
        with pytest.raises(ToolError) as not_found:
            await toolbox.run("account_balance", {"phone": "1"})
        assert TOKEN not in str(not_found.value)
    async with ToolBox(bot, env={}) as toolbox:
        with pytest.raises(ToolError, match="ACME_API_TOKEN, which is not set") as missing:
            await toolbox.run("account_balance", {"phone": "919876543210"})
        assert missing.value.kind == "missing_env"


async def test_a_slow_backend_times_out(orders: ToolBox, backend: FakeToolBackend) -> None:
    backend.delay_s = 1.0
    started = time.monotonic()
    with pytest.raises(ToolError) as error:
        await orders.run("broken", {})
    assert error.value.kind == "timeout" and "0.3 s" in error.value.message
    assert time.monotonic() - started < 0.9


async def test_a_json_object_is_required(orders: ToolBox) -> None:
    with pytest.raises(ToolError) as error:
        await orders.run("broken", {})
    assert error.value.kind == "bad_response"


async def test_a_result_line_needs_its_fields(backend: FakeToolBackend) -> None:
    tool = BOTS["order_line"].tools[0].model_copy(update={"result": "Order {order_id} costs {price}."})
    bot = backend.point(BOTS["order_line"].model_copy(update={"tools": [tool]}))
    async with ToolBox(bot, env={}) as toolbox:
        with pytest.raises(ToolError, match="price") as error:
            await toolbox.run("order_status", {"order_id": "12345"})
    assert error.value.kind == "bad_response"


async def test_post_sends_json(orders: ToolBox, backend: FakeToolBackend) -> None:
    result = await orders.run("open_ticket", {"summary": "parcel damaged"})
    assert result["result"].startswith("Ticket T") and result["summary"] == "parcel damaged"
    assert backend.requests[-1].method == "POST" and backend.requests[-1].body == {
        "summary": "parcel damaged"
    }


async def test_an_unreachable_backend() -> None:
    with FakeToolBackend() as gone:
        bot = gone.point(BOTS["order_line"])
    async with ToolBox(bot, env={}) as toolbox:
        with pytest.raises(ToolError) as error:
            await toolbox.run("order_status", {"order_id": "12345"})
    assert error.value.kind == "unreachable"


async def test_the_script_runs_tools_through_the_toolbox(backend: FakeToolBackend) -> None:
    intent = Intent(
        name="my_order",
        keywords=["parcel"],
        reply="Your parcel is {tool.order_status.status}. {tool.order_status.result}",
        actions=[{"tool": "order_status", "args": {"order_id": "55555"}}],
    )
    bot = backend.point(BOTS["order_line"].model_copy(update={"intents": [intent]}))
    ctx = CallContext(call_id="c", bot_name="order_line", bot=bot, caller_number="1", called_number="2")
    async with ToolBox(bot, env={}) as toolbox:
        items: list[Any] = [i async for i in ScriptedDialogue(ctx, run_tool=toolbox.run).reply("my parcel")]
    assert items[-1] == TextDelta(
        "Your parcel is out for delivery. Order 55555 is out for delivery, expected on today."
    )
