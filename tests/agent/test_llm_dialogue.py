"""LLMDialogue against the fake OpenAI-compatible server and the fake tool backend, over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config.service import LlmConfig
from agent.config.settings import load_settings
from agent.dialogue.base import CallContext, DialogueAction, DialogueFailure, ReplyItem, TextDelta
from agent.dialogue.llm import LLMDialogue, make_client
from agent.dialogue.llm_context import INTERRUPTED, estimate_tokens
from agent.dialogue.tools import ToolBox
from testkit.backends import FakeToolBackend
from testkit.llm_server import FakeLlmServer

REPO = Path(__file__).resolve().parents[2]
BOTS = load_settings(REPO / "config.yaml").bots
CALLER = "919876543210"


@pytest.fixture(scope="module")
def _llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeToolBackend]:
    with FakeToolBackend() as server:
        yield server


@pytest.fixture
def llm(_llm: FakeLlmServer) -> FakeLlmServer:
    _llm.reset()
    return _llm


def settings(llm_url: str, **overrides: Any) -> LlmConfig:
    values: dict[str, Any] = {
        "base_url": llm_url,
        "model": "phone-model",
        "api_key_env": "TEST_LLM_KEY",
        "first_token_timeout_s": 0.5,
        "timeout_s": 2.0,
        **overrides,
    }
    return LlmConfig(**values)


@pytest.fixture
async def make(llm: FakeLlmServer, backend: FakeToolBackend) -> AsyncIterator[Any]:
    made: list[LLMDialogue] = []

    def make_dialogue(bot: str = "order_line", url: str | None = None, **overrides: Any) -> LLMDialogue:
        config = backend.point(BOTS[bot])
        ctx = CallContext(call_id="c-1", bot_name=bot, bot=config, caller_number=CALLER, called_number="1")
        dialogue = LLMDialogue(
            ctx, settings(url or llm.base_url, **overrides), env={"TEST_LLM_KEY": "sk-abc"}
        )
        made.append(dialogue)
        return dialogue

    yield make_dialogue
    for dialogue in made:
        await dialogue.aclose()


async def collect(dialogue: LLMDialogue, text: str) -> list[ReplyItem]:
    return [item async for item in dialogue.reply(text)]


def spoken(items: list[ReplyItem]) -> str:
    return "".join(i.text for i in items if isinstance(i, TextDelta))


async def test_text_streams_as_it_arrives(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hello", reply="Hi, this is ShopKart. How can I help you today?")
    llm.set_timing(token_delay_s=0.05)
    dialogue = make()
    started = time.monotonic()
    arrivals: list[float] = []
    items: list[ReplyItem] = []
    async for item in dialogue.reply("hello"):
        arrivals.append(time.monotonic() - started)
        items.append(item)
    assert all(isinstance(i, TextDelta) for i in items) and len(items) == 10
    assert spoken(items) == "Hi, this is ShopKart. How can I help you today?"
    assert arrivals[-1] - arrivals[0] >= 0.35  # the first words came while the rest was still being written
    assert dialogue.context.history[-1] == {"role": "assistant", "content": spoken(items)}


async def test_an_order_lookup_takes_two_rounds(
    llm: FakeLlmServer, backend: FakeToolBackend, make: Any
) -> None:
    llm.on(r"order (?:number )?(\d+)", tool="order_status", args={"order_id": r"\1"})
    llm.after_tool("order_status", reply="{tool_result}")
    dialogue = make()
    items = await collect(dialogue, "where is my order number 12345")
    assert items[0] == DialogueAction(
        kind="tool", tool="order_status", args={"order_id": "12345"}, reason={"by": "llm"}
    )
    assert spoken(items) == "Order 12345 is shipped, expected on Friday."
    assert backend.requests[-1].raw_path == "/orders/12345"
    first, second = llm.requests
    assert "tool_choice" in first and second["messages"][-1]["content"] == spoken(items)
    call = second["messages"][-2]["tool_calls"][0]
    assert call["function"] == {"name": "order_status", "arguments": '{"order_id": "12345"}'}
    assert second["messages"][-1]["tool_call_id"] == call["id"] and dialogue.tool_failures == 0


async def test_a_failed_tool_is_told_to_the_model(llm: FakeLlmServer, make: Any) -> None:
    llm.on(r"order (\d+)", tool="order_status", args={"order_id": r"\1"})
    llm.after_tool("order_status", reply="Sorry, I could not find that order.")
    dialogue = make()
    items = await collect(dialogue, "order 99999")
    assert spoken(items) == "Sorry, I could not find that order."
    result = llm.requests[1]["messages"][-1]
    assert (
        result["role"] == "tool" and "HTTP 404" in result["content"] and "do not guess" in result["content"]
    )
    assert dialogue.tool_failures == 1


async def test_tool_rounds_are_bounded(llm: FakeLlmServer, make: Any) -> None:
    llm.on(r"order (\d+)", tool="order_status", args={"order_id": r"\1"})
    llm.after_tool("order_status", tool="order_status", args={"order_id": "12345"})  # a model in a loop
    dialogue = make(max_tool_rounds=2)
    with pytest.raises(DialogueFailure) as failure:
        await collect(dialogue, "order 55555")
    assert failure.value.reason == "tool_rounds" and dialogue.tool_failures == 0
    assert [r["tool_choice"] for r in llm.requests] == ["auto", "auto", "none"]
    calls = [c["id"] for m in dialogue.context.history for c in m.get("tool_calls") or []]
    answers = [m["tool_call_id"] for m in dialogue.context.history if m["role"] == "tool"]
    assert len(calls) == 3 and answers == calls  # every call answered: the next request stays valid


async def test_a_transfer_by_department_name(llm: FakeLlmServer, make: Any) -> None:
    llm.on("payment", tool="transfer_to_department", args={"department": "payments"})
    dialogue = make()
    items = await collect(dialogue, "my payment failed")
    handoff = BOTS["order_line"].phrases.handoff
    assert items[0] == TextDelta(handoff)
    assert items[1] == DialogueAction(
        kind="transfer", department="payments", reason={"by": "llm", "tool": "transfer_to_department"}
    )
    assert len(items) == 2 and len(llm.requests) == 1  # no second round after a transfer
    assert dialogue.understanding.intent == "payment_problem"  # the script's matcher still reads intents


@pytest.mark.parametrize("asked", ["+91 80 4000 2201", "sales"])
async def test_a_transfer_to_a_number_or_unknown_desk_is_refused(
    llm: FakeLlmServer, make: Any, asked: str
) -> None:
    llm.on("transfer", tool="transfer_to_department", args={"department": asked})
    llm.after_tool("transfer_to_department", reply="I can connect you to returns or payments.")
    dialogue = make()
    items = await collect(dialogue, f"transfer me to {asked}")
    assert not [i for i in items if isinstance(i, DialogueAction)]
    assert spoken(items) == "I can connect you to returns or payments."
    refusal = llm.requests[1]["messages"][-1]["content"]
    assert refusal.startswith("Refused: there is no department") and "returns, payments" in refusal
    assert dialogue.tool_failures == 1


async def test_the_system_prompt_and_the_tools_offered(llm: FakeLlmServer, make: Any) -> None:
    await collect(make("support_desk"), "hi")
    (request,) = llm.requests
    assert request["model"] == "phone-model" and request["stream"] is True
    system = request["messages"][0]
    assert system["role"] == "system"
    for fact in (
        "You are the phone assistant of Acme Bank",  # the persona
        f"The caller's number is {CALLER}",
        "billing: Charges, fees, refunds",
        "one or two short spoken sentences",
        "No lists, no markdown",
        "Say numbers the way a person says them",
        "call transfer_to_department",
    ):
        assert fact in system["content"]
    assert request["messages"][1:] == [
        {"role": "assistant", "content": BOTS["support_desk"].greeting},
        {"role": "user", "content": "hi"},
    ]
    tools = {t["function"]["name"]: t["function"] for t in request["tools"]}
    assert set(tools) == {"transfer_to_department", "end_call", "play_hold_music", "account_balance"}
    assert tools["transfer_to_department"]["parameters"]["properties"]["department"]["enum"] == [
        "billing",
        "technical",
        "senior",
    ]
    assert llm.request_headers[0]["authorization"] == "Bearer sk-abc"


async def test_old_turns_are_dropped_and_summarised(llm: FakeLlmServer, make: Any) -> None:
    llm.on("turn", reply="Noted, thank you for telling me all of that in such detail.")
    dialogue = make(context_tokens=500)
    said = [f"This is turn {n}: my parcel number {n}{n}{n} went to the wrong street, " * 2 for n in range(8)]
    for text in said:
        await collect(dialogue, text)
    messages = llm.requests[-1]["messages"]
    assert sum(estimate_tokens(m) for m in messages) <= 500
    assert messages[0]["content"] == dialogue.context.system
    assert messages[-1] == {"role": "user", "content": said[-1]}
    summary = messages[1]
    assert summary["role"] == "system" and summary["content"].startswith(
        "Earlier in the call: the caller said"
    )
    kept = [m["content"] for m in messages if m["role"] == "user"]
    assert said[0] not in kept and said[-2] in kept
    dropped = [s for s in said if s not in kept]
    assert " ".join(dropped[-1].split())[:60] in summary["content"]  # extractive: the caller's own words
    assert dialogue.context.dropped_turns == len(dropped) + 1  # and the greeting


async def test_the_current_turn_is_kept_even_over_budget(llm: FakeLlmServer, make: Any) -> None:
    dialogue = make(context_tokens=200)
    long_turn = "please listen " * 200
    await collect(dialogue, long_turn)
    messages = llm.requests[-1]["messages"]
    assert messages[0]["role"] == "system" and messages[-1]["content"] == long_turn


async def test_heard_keeps_only_what_the_caller_heard(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hours", reply="We are open from nine to five, Monday to Saturday, and closed on Sunday.")
    dialogue = make()
    items = await collect(dialogue, "what are your hours")
    dialogue.heard(spoken(items), "We are open from nine to five,")
    await collect(dialogue, "sorry, what?")
    assistant = [m for m in llm.requests[-1]["messages"] if m["role"] == "assistant"]
    assert assistant[-1]["content"] == f"We are open from nine to five, {INTERRUPTED}"


async def test_heard_across_a_tool_round(llm: FakeLlmServer, make: Any) -> None:
    llm.on(r"order (\d+)", reply="Let me check that.", tool="order_status", args={"order_id": r"\1"})
    llm.after_tool("order_status", reply="{tool_result}")
    dialogue = make()
    items = await collect(dialogue, "order 12345")
    dialogue.heard(spoken(items), "Let me check that.")
    texts = [m.get("content") for m in dialogue.context.history if m["role"] == "assistant"]
    assert texts[-1] == f"Let me check that. {INTERRUPTED}"  # the unheard answer is gone
    assert dialogue.context.history[-1]["role"] == "tool"


async def test_hang_fails_at_the_first_token_deadline(llm: FakeLlmServer, make: Any) -> None:
    llm.fail("hang")
    started = time.monotonic()
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(first_token_timeout_s=0.3), "hello")
    assert failure.value.reason == "first_token_timeout"
    assert 0.25 < time.monotonic() - started < 1.5
    assert len(llm.requests) == 1  # no retry: the caller is already waiting
    await asyncio.sleep(0.1)
    assert llm.open_requests == 0  # the abandoned request was closed


async def test_a_slow_first_token_after_the_headers(llm: FakeLlmServer, make: Any) -> None:
    llm.set_timing(ttft_s=1.0)
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(first_token_timeout_s=0.3), "hello")
    assert failure.value.reason == "first_token_timeout"


async def test_500_is_retried_once(llm: FakeLlmServer, make: Any) -> None:
    llm.fail("500")
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(), "hello")
    assert failure.value.reason == "http_500" and len(llm.requests) == 2
    llm.reset()
    llm.fail("500", times=1)
    assert spoken(await collect(make(), "hello")) == llm.default_reply
    assert len(llm.requests) == 2


async def test_429_and_no_retries(llm: FakeLlmServer, make: Any) -> None:
    llm.fail("429")
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(max_retries=0), "hello")
    assert failure.value.reason == "http_429" and len(llm.requests) == 1


async def test_a_cut_stream_breaks_after_the_first_words(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hello", reply="one two three four five six seven")
    llm.fail("cut", after_tokens=3)
    dialogue = make()
    items: list[ReplyItem] = []
    with pytest.raises(DialogueFailure) as failure:
        async for item in dialogue.reply("hello"):
            items.append(item)
    assert failure.value.reason == "stream_broken" and spoken(items) == "one two three"
    assert len(llm.requests) == 1  # words were already spoken: never retried
    assert dialogue.context.history[-1] == {"role": "assistant", "content": "one two three"}


async def test_a_stalled_stream_times_out(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hello", reply="one two three four five")
    llm.hang_after(2)
    started = time.monotonic()
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(timeout_s=0.6), "hello")
    assert failure.value.reason == "timeout" and 0.5 < time.monotonic() - started < 2.0


async def test_a_stopped_server_is_unreachable(make: Any) -> None:
    gone = FakeLlmServer()
    with gone:
        url = gone.base_url
    started = time.monotonic()
    with pytest.raises(DialogueFailure) as failure:
        await collect(make(url=url), "hello")
    assert failure.value.reason == "unreachable" and time.monotonic() - started < 1.5


async def test_cancelling_a_reply_closes_its_stream(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hello", reply="a long answer " * 20)
    llm.set_timing(token_delay_s=0.1)
    dialogue = make()
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in dialogue.reply("hello"):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    assert llm.open_requests == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(50):  # the server notices the closed connection within a token or two
        if not llm.open_requests:
            break
        await asyncio.sleep(0.02)
    assert llm.open_requests == 0
    kept = dialogue.context.history[-1]["content"]
    assert kept and ("a long answer " * 20).startswith(kept)  # what was said so far is kept


async def test_a_consumer_that_stops_early_closes_the_stream(llm: FakeLlmServer, make: Any) -> None:
    llm.on("hello", reply="a long answer " * 20)
    llm.set_timing(token_delay_s=0.1)
    reply = make().reply("hello")
    assert isinstance(await anext(reply), TextDelta)
    await reply.aclose()
    for _ in range(50):
        if not llm.open_requests:
            break
        await asyncio.sleep(0.02)
    assert llm.open_requests == 0


async def test_cancelling_during_a_tool_still_answers_the_call(
    llm: FakeLlmServer, backend: FakeToolBackend, make: Any
) -> None:
    llm.on(r"order (\d+)", tool="order_status", args={"order_id": r"\1"})
    backend.delay_s = 2.0
    try:
        dialogue = make()
        task = asyncio.create_task(collect(dialogue, "order 12345"))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        backend.delay_s = 0.0
    last = dialogue.context.history[-1]
    assert last["role"] == "tool" and last["content"] == "Not done: the caller interrupted."


async def test_a_session_tool_runner_and_a_hangup(llm: FakeLlmServer, make: Any) -> None:
    ran: list[str] = []
    dialogue = make()

    async def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        ran.append(name)  # where the session would start its filler timer
        return await dialogue.toolbox.run(name, args)

    dialogue.run_tool = run_tool
    llm.on(r"order (\d+)", tool="order_status", args={"order_id": r"\1"})
    llm.after_tool("order_status", reply="{tool_result} Anything else?")
    llm.on("bye", reply="Goodbye!", tool="end_call", args={"reason": "caller is done"})
    assert "Friday" in spoken(await collect(dialogue, "order 12345")) and ran == ["order_status"]
    items = await collect(dialogue, "no thanks, bye")
    assert spoken(items) == "Goodbye!"  # the model's own goodbye, not the fixed line as well
    assert isinstance(items[-1], DialogueAction) and items[-1].kind == "hangup"


def test_make_client() -> None:
    client = make_client(settings("http://127.0.0.1:9/v1"), env={})
    assert client.api_key == "not-needed" and client.max_retries == 0
    assert make_client(settings("http://x/v1"), env={"TEST_LLM_KEY": "sk-1"}).api_key == "sk-1"
    with pytest.raises(ValueError, match="base_url"):
        make_client(LlmConfig(), env={})


async def test_a_shared_client_and_toolbox(llm: FakeLlmServer) -> None:
    config = settings(llm.base_url)
    bot = BOTS["support_desk"]
    ctx = CallContext(
        call_id="c-2", bot_name="support_desk", bot=bot, caller_number=CALLER, called_number="1"
    )
    client = make_client(config, env={})
    async with ToolBox(bot, env={}) as toolbox:
        dialogue = LLMDialogue(ctx, config, client=client, toolbox=toolbox)
        assert spoken(await collect(dialogue, "hi")) == llm.default_reply
        await dialogue.aclose()
        assert not client.is_closed()  # not ours to close
    await client.close()
