"""The fake OpenAI-compatible server: wire shapes, rules, timing and faults, read by the real SDK."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from testkit.llm_server import FakeLlmServer

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def _server() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


@pytest.fixture
def llm(_server: FakeLlmServer) -> FakeLlmServer:
    _server.reset()
    return _server


def client(llm: FakeLlmServer, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=llm.base_url, api_key="sk-test", max_retries=0, timeout=timeout)


def sse_events(llm: FakeLlmServer, body: dict[str, object]) -> list[str]:
    """The raw `data:` payloads of a streamed answer."""
    with httpx.stream("POST", f"{llm.base_url}/chat/completions", json=body, timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    assert text.endswith("\n\n")
    return [block.removeprefix("data: ") for block in text.strip().split("\n\n")]


def test_a_streamed_reply_has_the_openai_chunk_shape() -> None:
    with FakeLlmServer(model="fallback-model") as llm:
        llm.on("hello", reply="Hi there, how can I help?")
        events = sse_events(llm, {"model": "m-1", "messages": MESSAGES, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"m-1"} and len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    texts = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
    assert len(texts) == 6 and "".join(texts) == "Hi there, how can I help?"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


def test_a_tool_call_streams_its_arguments_in_pieces(llm: FakeLlmServer) -> None:
    llm.on(r"order (?P<id>\d+)", tool="order_status", args={"order_id": r"\g<id>", "verbose": True})
    events = sse_events(
        llm, {"model": "m", "messages": [{"role": "user", "content": "order 4711 please"}], "stream": True}
    )
    chunks = [json.loads(e) for e in events[:-1]]
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"] == {
        "name": "order_status",
        "arguments": "",
    }
    assert all("id" not in c and "name" not in c["function"] for c in calls[1:]) and len(calls) >= 3
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {
        "order_id": "4711",
        "verbose": True,
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_the_sdk_assembles_text_and_tool_calls(llm: FakeLlmServer) -> None:
    llm.on(r"order (\d+)", reply="Let me check.", tool="order_status", args={"order_id": r"\1"})
    stream = await client(llm).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "where is order 12345"}], stream=True
    )
    text, arguments, names = "", "", ""
    async for chunk in stream:
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            names += call.function.name or "" if call.function else ""
            arguments += call.function.arguments or "" if call.function else ""
    assert (text, names, json.loads(arguments)) == ("Let me check.", "order_status", {"order_id": "12345"})


async def test_tool_results_and_the_default_reply(llm: FakeLlmServer) -> None:
    llm.after_tool("order_status", reply="Here you go: {tool_result}")
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "order 1"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "order_status", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_9", "content": "Order 1 is packed."},
    ]
    answer = await client(llm).chat.completions.create(model="m", messages=messages)
    assert answer.object == "chat.completion" and answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content == "Here you go: Order 1 is packed."
    other = await client(llm).chat.completions.create(model="m", messages=MESSAGES)
    assert other.choices[0].message.content == llm.default_reply
    assert [r["messages"][-1]["role"] for r in llm.requests] == ["tool", "user"]


async def test_non_streamed_tool_calls_and_models(llm: FakeLlmServer) -> None:
    llm.on("hello", tool="end_call", args={"reason": "done"})
    answer = await client(llm).chat.completions.create(model="m", messages=MESSAGES)
    (call,) = answer.choices[0].message.tool_calls or []
    assert call.function.name == "end_call" and json.loads(call.function.arguments) == {"reason": "done"}
    assert answer.choices[0].finish_reason == "tool_calls"
    models = await client(llm).models.list()
    assert [m.id for m in models.data] == [llm.model]


async def test_requests_are_recorded_with_their_headers(llm: FakeLlmServer) -> None:
    tools = [{"type": "function", "function": {"name": "end_call", "parameters": {"type": "object"}}}]
    await client(llm).chat.completions.create(model="m", messages=MESSAGES, tools=tools)
    (body,) = llm.requests
    assert body["messages"] == MESSAGES and body["tools"] == tools
    assert llm.request_headers[0]["authorization"] == "Bearer sk-test"


async def test_timing_first_token_and_between_tokens(llm: FakeLlmServer) -> None:
    llm.on("hello", reply="one two three four")
    llm.set_timing(ttft_s=0.3, token_delay_s=0.1)
    started = time.monotonic()
    stream = await client(llm).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    arrivals = [time.monotonic() - started async for c in stream if c.choices and c.choices[0].delta.content]
    assert 0.28 <= arrivals[0] < 1.0
    assert arrivals[-1] - arrivals[0] >= 0.28  # three gaps of 0.1 s


async def test_500_and_429_for_as_many_requests_as_asked(llm: FakeLlmServer) -> None:
    llm.fail("500", times=1)
    with pytest.raises(openai.InternalServerError) as error:
        await client(llm).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert error.value.status_code == 500
    answer = await client(llm).chat.completions.create(model="m", messages=MESSAGES)
    assert answer.choices[0].message.content == llm.default_reply
    llm.fail("429")
    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await client(llm).chat.completions.create(model="m", messages=MESSAGES)
    llm.clear_faults()
    await client(llm).chat.completions.create(model="m", messages=MESSAGES)
    assert len(llm.requests) == 5


async def test_hang_never_answers(llm: FakeLlmServer) -> None:
    llm.fail("hang")
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await client(llm, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert time.monotonic() - started < 2.0


def test_cut_drops_the_connection_without_done(llm: FakeLlmServer) -> None:
    llm.on("hello", reply="one two three four five six")
    llm.fail("cut", after_tokens=3)
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream(
            "POST", f"{llm.base_url}/chat/completions", json={"messages": MESSAGES, "stream": True}
        ) as r,
    ):
        for part in r.iter_bytes():
            received += part
    assert received.count(b"data: ") == 3 and b"[DONE]" not in received


async def test_hang_after_n_tokens(llm: FakeLlmServer) -> None:
    llm.on("hello", reply="one two three four five six")
    llm.hang_after(2)
    stream = await client(llm, timeout=0.5).chat.completions.create(model="m", messages=MESSAGES, stream=True)
    texts: list[str] = []
    with pytest.raises(openai.APITimeoutError):
        async for chunk in stream:
            texts.append(chunk.choices[0].delta.content or "")
    assert "".join(texts) == "one two"


async def test_a_stopped_server_refuses_connections() -> None:
    llm = FakeLlmServer()
    llm.start()
    base_url = llm.base_url
    await openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0).models.list()
    llm.stop()
    llm.stop()  # twice is fine
    with pytest.raises(openai.APIConnectionError):
        await openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0).models.list()
    with pytest.raises(RuntimeError, match="not running"):
        _ = llm.base_url


def test_a_rule_needs_something_to_say() -> None:
    with pytest.raises(ValueError, match="reply, a tool"):
        FakeLlmServer().on("x")
