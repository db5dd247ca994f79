"""Faults on a live call through the real service: the LLM slow, cut mid-stream, answering garbage or 500;
an HTTP tool timing out; ASR or TTS raising; the socket lost mid-utterance and mid-reply.

Each test says what the caller hears and what the record shows, and checks that the call left nothing
behind: no session, no pending record write, no task, no CallSession in memory. The LLM is our
OpenAI-compatible test server (testkit/llm_server.py) behind the real `openai` SDK. The LLM found
dead (unreachable) is test_dialogue_calls.py::test_a_dead_llm_gives_the_fallback_line_then_a_person.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.backends import FakeToolBackend
from testkit.caller_voice import caller_says
from testkit.llm_server import FakeLlmServer
from testkit.simulator import PiopiySimulator, SimulatedCall
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import (
    assert_call_left_nothing,
    events_of,
    eventually,
    live_sessions,
    rss_bytes,
    runtime_of,
    task_names,
)
from tests.agent.test_calls import call_id_of, final_record, wait_for_bot_line
from tests.agent.test_dialogue_calls import bot_lines, bridges, pointed_tools

FALLBACK = "Sorry, I'm having trouble on my side. Let me get a person to help you."
SENIOR_DESK = [918040001301, 918040001302]  # where support_desk's `assistant_failed` rule sends callers
QUESTION = "What are your opening hours?"


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeToolBackend]:
    os.environ["ACME_API_TOKEN"] = "test-acme-token"  # the balance tool's header secret
    with FakeToolBackend() as server:
        yield server


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        yield server


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, backend: FakeToolBackend, llm: FakeLlmServer
) -> Iterator[Service]:
    bots = pointed_tools(backend)
    for tool in bots["support_desk"]["tools"]:
        tool["timeout_s"] = 1.5  # the balance lookup gives up after 1.5 s (its filler comes at 1 s)
    settings = {"base_url": llm.base_url, "model": "test-model", "first_token_timeout_s": 2.0, "timeout_s": 5}
    with running_service(tmp_path_factory.mktemp("faults"), bots=bots, llm=settings) as service:
        yield service


@pytest.fixture
async def baseline(service: Service, llm: FakeLlmServer, backend: FakeToolBackend) -> list[str]:
    """The service's tasks while idle, before the test's call."""
    llm.reset()
    backend.delay_s = 0.0
    runtime = runtime_of(service)
    await eventually(lambda: not runtime.calls.sessions and runtime.writer.pending == 0, "the service idle")
    return await task_names(runtime)


async def ask(service: Service, question: str = QUESTION) -> SimulatedCall:
    """A call to support_desk that has heard the greeting and asked `question`."""
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    call = await sim.place_call(to_number=SUPPORT_NUMBER)
    await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
    await call.say_pcm(caller_says(question), 8000)
    return call


async def hang_up_after_the_drop(service: Service, call: SimulatedCall) -> None:
    """The platform's hangup event and CDR, once the service has seen the socket die (posted earlier,
    the hangup would say the caller ended the call)."""
    runtime = runtime_of(service)
    call_id = call_id_of(call.pcmo)
    await eventually(lambda: call_id not in runtime.calls.sessions, "the service saw the socket die")
    await call.hangup()


def failure_of(record: dict[str, Any]) -> dict[str, Any]:
    (failure,) = events_of(record, "dialogue", "failure")
    return failure


def started_after_caller(record: dict[str, Any], text: str) -> int:
    """Milliseconds from the end of the caller's turn to the start of the bot turn saying `text`."""
    caller = next(t for t in record["turns"] if t["role"] == "caller")
    bot = next(t for t in record["turns"] if t["role"] == "bot" and text in t["text"])
    return int(bot["start_ms"] - caller["end_ms"])


@pytest.mark.parametrize(
    ("fault", "reason"),
    [("slow", "first_token_timeout"), ("garbage", "stream_broken"), ("500", "http_500")],
)
async def test_an_llm_that_fails_before_answering_gives_the_fallback_then_a_person(
    service: Service, llm: FakeLlmServer, baseline: list[str], fault: str, reason: str
) -> None:
    """Caller hears: the fallback line ("…Let me get a person to help you."), never dead air (for a slow
    LLM: at the 2 s first-token deadline, not after its 10 s), then is bridged to the senior desk.
    Record: a `dialogue/failure` event with the reason, the `assistant_failed` rule, the bridge."""
    llm.on(".", reply="We are open from nine to five.")
    if fault == "slow":
        llm.set_timing(ttft_s=10.0)
    else:
        llm.fail(fault)  # type: ignore[arg-type]
    call = await ask(service)
    async with call:
        bridge = await call.wait_for_control(lambda c: bool(getattr(c, "actions", None)), timeout=20)
        call_id = call_id_of(call.pcmo)
    assert [c["number"] for c in bridge.actions[0]["connect"]] == SENIOR_DESK
    record = await final_record(service, call_id)
    assert FALLBACK in bot_lines(record) and "nine to five" not in " ".join(bot_lines(record))
    assert failure_of(record)["reason"] == reason
    (fired,) = events_of(record, "escalation", "rule_fired")
    assert fired["rule"] == "assistant_failed" and bridges(record)
    if fault == "slow":
        assert started_after_caller(record, FALLBACK) < 8000  # well before the LLM's first token (10 s)
    await assert_call_left_nothing(runtime_of(service), call_id, baseline)


async def test_an_llm_stream_cut_mid_reply_ends_with_the_fallback(
    service: Service, llm: FakeLlmServer, baseline: list[str]
) -> None:
    """Caller hears: the start of the answer ("Sure."), then the fallback line, then a person.
    Record: the bot turn with what was said; `dialogue/failure` `stream_broken` with `said_before`;
    the LLM request was not retried (words had been spoken) and is closed."""
    llm.on(".", reply="Sure. We are open from nine in the morning to five in the evening, on weekdays.")
    llm.fail("cut", times=1, after_tokens=6)
    call = await ask(service)
    async with call:
        await call.wait_for_control(lambda c: bool(getattr(c, "actions", None)), timeout=20)
        call_id = call_id_of(call.pcmo)
    record = await final_record(service, call_id)
    lines = bot_lines(record)
    assert lines[1].startswith("Sure.") and "evening" not in lines[1] and FALLBACK in lines[2:]
    failure = failure_of(record)
    assert failure["reason"] == "stream_broken" and failure["said_before"].startswith("Sure.")
    assert len(llm.requests) == 1 and llm.open_requests == 0
    await assert_call_left_nothing(runtime_of(service), call_id, baseline)


async def test_a_tool_that_times_out_gets_a_filler_then_an_honest_answer(
    service: Service, llm: FakeLlmServer, backend: FakeToolBackend, baseline: list[str]
) -> None:
    """Caller hears: the tool's filler ("Let me look up your account.") after 1 s instead of silence,
    then the model's answer to the failure. Record: a `tool` action, a `tool/failure` event (kind
    timeout), and the call goes on (no transfer)."""
    llm.on("balance", tool="account_balance", args={"phone": "919876543210"})
    llm.after_tool("account_balance", reply="Sorry, I can't reach your account right now.")
    backend.delay_s = 3.0
    try:
        call = await ask(service, "What is my account balance?")
        async with call:
            await call.wait_for_bot_audio(timeout=10, since=call.now())
            call_id = call_id_of(call.pcmo)
            await wait_for_bot_line(service, call_id, "Sorry, I can't reach your account right now.")
            await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
    finally:
        backend.delay_s = 0.0
    record = await final_record(service, call_id)
    answer = bot_lines(record)[1]
    assert answer.startswith("Let me look up your account.")
    assert answer.endswith("Sorry, I can't reach your account right now.")
    (failure,) = events_of(record, "tool", "failure")
    assert failure["tool"] == "account_balance" and failure["kind"] == "timeout"
    assert "Failed:" in llm.requests[-1]["messages"][-1]["content"]
    assert not bridges(record) and not events_of(record, "dialogue", "failure")
    await assert_call_left_nothing(runtime_of(service), call_id, baseline)


@pytest.mark.parametrize("stage", ["asr", "tts"])
async def test_a_model_that_raises_gives_the_fallback_then_a_person(
    service: Service, llm: FakeLlmServer, baseline: list[str], stage: str
) -> None:
    """ASR (faster-whisper) or TTS (piper) raising mid-call. Caller hears: the fallback line (cached,
    so it needs no synthesis), then a person. Record: an `asr/failure` event (ASR), or a
    `dialogue/failure` event naming the error (TTS, while speaking the answer); the rule and bridge."""
    llm.on(".", reply="We are open from nine to five.")
    runtime = runtime_of(service)
    executor = runtime.executor
    broken = "_transcribe_blocking" if stage == "asr" else "_synthesize_clause"
    real_run = executor.run

    async def faulty_run(fn: Any, *args: Any) -> Any:
        if getattr(fn, "__name__", "") == broken:
            raise RuntimeError(f"scripted {stage} failure")
        return await real_run(fn, *args)

    executor.run = faulty_run  # type: ignore[method-assign]
    try:
        call = await ask(service)
        async with call:
            await call.wait_for_control(lambda c: bool(getattr(c, "actions", None)), timeout=20)
            call_id = call_id_of(call.pcmo)
    finally:
        del executor.run  # type: ignore[method-assign]
    record = await final_record(service, call_id)
    assert bot_lines(record)[1:2] == [FALLBACK] and bridges(record)
    if stage == "asr":
        (failure,) = events_of(record, "asr", "failure")
        assert failure["error"] == "RuntimeError" and "scripted asr" in failure["detail"]
        assert "caller" not in [t["role"] for t in record["turns"]]  # no words were understood
    else:
        assert failure_of(record)["reason"] == "RuntimeError"
    (fired,) = events_of(record, "escalation", "rule_fired")
    assert fired["rule"] == "assistant_failed"
    await assert_call_left_nothing(runtime, call_id, baseline)


async def test_the_socket_lost_mid_utterance(service: Service, baseline: list[str]) -> None:
    """The line dies while the caller is talking. Caller hears: nothing more (the line is gone).
    Record: status `dropped`, a `stream/closed` event (dropped, no close handshake), the greeting turn,
    the half caller turn as far as it was heard (`turns/unanswered`: transcribed, never answered), the
    recording finalized with the caller audio up to the cut."""
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    call = await sim.place_call(to_number=SUPPORT_NUMBER)
    await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
    speaking = asyncio.create_task(call.say_pcm(caller_says(QUESTION + " And on Sundays?"), 8000))
    await asyncio.sleep(0.8)  # mid-sentence
    await call.drop()
    speaking.cancel()
    call_id = call_id_of(call.pcmo)
    await hang_up_after_the_drop(service, call)
    record = await final_record(service, call_id)
    assert record["status"] == "dropped"  # (end reason: caller_hangup once PIOPIY's hangup event came)
    (closed,) = events_of(record, "stream", "closed")
    assert closed["reason"].startswith("socket_closed_") and closed["dropped"]  # no close handshake
    assert [t["role"] for t in record["turns"]] == ["bot", "caller"]
    words = record["turns"][1]["text"].lower()
    assert words.startswith("what are") and "sunday" not in words  # up to the cut, nothing after it
    assert events_of(record, "turns", "unanswered")[0]["text"] == record["turns"][1]["text"]
    assert record["recording"] is not None
    path = service.data_dir / "recordings" / f"{call_id}.wav"
    assert path.exists() and not (service.data_dir / "recordings" / call_id).exists()
    await assert_call_left_nothing(runtime_of(service), call_id, baseline)


async def test_the_socket_lost_mid_reply(service: Service, llm: FakeLlmServer, baseline: list[str]) -> None:
    """The line dies while the bot is answering (the LLM still streaming). Caller hears: the start of
    the answer. Record: status `dropped`; the bot turn holds what was sent, marked interrupted; the
    LLM request is closed at once; the recording is finalized."""
    llm.on(".", reply="Sure. We are open from nine in the morning. " + "And on many other days too. " * 12)
    llm.set_timing(token_delay_s=0.15)
    call = await ask(service)
    await call.wait_for_bot_audio(timeout=10, since=call.now())
    await call.drop()
    call_id = call_id_of(call.pcmo)
    await hang_up_after_the_drop(service, call)
    record = await final_record(service, call_id)
    assert record["status"] == "dropped" and record["recording"] is not None
    answer = record["turns"][-1]
    assert answer["role"] == "bot" and answer["text"].startswith("Sure.") and answer["interrupted"]
    await eventually(lambda: llm.open_requests == 0, "the LLM stream closed")
    await assert_call_left_nothing(runtime_of(service), call_id, baseline)


async def test_repeated_faulty_calls_leave_no_memory_behind(service: Service, baseline: list[str]) -> None:
    """Many calls lost mid-greeting: every record is saved, and memory stays flat (no CallSession
    survives, resident memory grows by less than a generous bound)."""
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)

    async def dropped_call() -> str:
        call = await sim.place_call(to_number=SUPPORT_NUMBER)
        await call.wait_for_bot_audio(timeout=10)
        await call.drop()
        await hang_up_after_the_drop(service, call)
        return call_id_of(call.pcmo)

    for _ in range(3):  # warm-up: first-use allocations are not leaks
        await final_record(service, await dropped_call())
    before = rss_bytes()
    ids = [await dropped_call() for _ in range(12)]
    for call_id in ids:
        assert (await final_record(service, call_id))["status"] == "dropped"
    await assert_call_left_nothing(runtime_of(service), ids[-1], baseline)
    assert live_sessions() == []
    assert rss_bytes() - before < 64 * 2**20
