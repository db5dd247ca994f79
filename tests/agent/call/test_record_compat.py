"""The public shapes a call produces stay as they were: the record's keys, its event and action names,
and the live events' names and fields (dashboards and API clients read them)."""

from __future__ import annotations

from typing import Any

from agent.dialogue.base import DialogueAction
from agent.telephony.carrier import TransferOutcome
from agent.worker.commands import Listen
from tests.agent.call.conftest import Call, silence
from tests.agent.faults import eventually

LONG = "Our branches open at nine in the morning and close at five in the evening, every weekday of the year."
QUESTION = "When are your branches open"

RECORD_KEYS = {"call_id", "turns", "actions", "events", "cdr", "status", "end_reason", "bot", "ended_at"}
TURN_KEYS = {"role", "text", "started_at", "ended_at", "latency_ms", "signals", "interrupted", "heard_text"}


def live_shapes(events: list[tuple[str, dict[str, Any]]]) -> dict[str, set[str]]:
    shapes: dict[str, set[str]] = {}
    for kind, data in events:
        shapes.setdefault(kind, set()).update(data)
    return shapes


async def test_a_call_keeps_its_public_record_and_live_event_shapes(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [LONG]
    call.dialogue.replies["Put me through to billing"] = [
        DialogueAction(kind="transfer", department="billing")
    ]
    call.says(QUESTION)
    await call.replying()
    call.says("Put me through to billing", then_silence_s=0.0)  # over the bot
    await eventually(lambda: "clear" in call.link.kinds(), "the barge-in")
    call.session.on_audio(silence(1.0))
    await eventually(lambda: "transfer" in call.link.kinds(), "the transfer")
    await call.session.on_news(TransferOutcome(answered=True, why="answered"))
    await call.session.close("socket_closed_1000")

    record = await call.record()
    assert RECORD_KEYS <= set(record)
    assert {key for turn in record["turns"] for key in turn} >= TURN_KEYS
    assert {(e["source"], e["status"]) for e in record["events"]} >= {
        ("stream", "connected"),
        ("turns", "barge_in"),
        ("transfer", "answered"),
        ("stream", "closed"),
    }
    assert {a["type"] for a in record["actions"]} == {"transfer"}  # the link's own kind (PIOPIY: "pcmo")
    assert {"type", "payload", "reason", "at"} == set(record["actions"][0])

    shapes = live_shapes(call.live_events())
    assert shapes["call.started"] == {"bot", "caller", "called"}
    assert shapes["state"] == {"state"}
    assert shapes["speech.started"] == {"onset_ms"}
    assert shapes["barge_in"] == {"onset_ms", "detected_after_ms"}
    assert {"role", "text", "latency_ms", "continued"} <= shapes["turn"]
    assert {"turn_id"} <= shapes["signals"]
    assert shapes["action"] == {"type", "payload", "reason"}
    assert shapes["transfer.answered"] == {"department"}
    assert shapes["call.ended"] == {"reason"}


async def test_the_bots_turns_reach_the_live_feed(call: Call) -> None:
    call.dialogue.replies[QUESTION] = ["We open at nine."]
    call.says(QUESTION)
    await eventually(lambda: call.dialogue.asked == [QUESTION], "the caller's turn was answered")
    await eventually(
        lambda: call.session.state == "listening" and not call.session.reply.active, "the reply ended"
    )
    turns = [data for kind, data in call.live_events() if kind == "turn"]
    assert [(t["role"], t["text"]) for t in turns] == [
        ("bot", "Hi."),
        ("caller", QUESTION),
        ("bot", "We open at nine."),
    ]
    assert turns[2]["interrupted"] is False


async def test_tags_keypad_failures_and_supervisors_keep_their_shapes(call: Call) -> None:
    call.session.escalation.rules = []  # the default handoff after a failure, not a rule's
    call.dialogue.replies[QUESTION] = ["Noted.", DialogueAction(kind="tag", tags=("vip",))]
    call.says(QUESTION)
    await eventually(lambda: "tags" in live_shapes(call.live_events_kept()), "the tag")
    await call.session.on_dtmf("5")
    await eventually(lambda: call.dialogue.asked[-1:] == ["[keypad] 5"], "the digits were answered")
    await call.runtime.calls.execute(call.session.call_id, Listen("bob"))
    await eventually(lambda: not call.session.reply.active, "the keypad answer ended")
    call.dialogue.fail_with = RuntimeError("the LLM is down")
    call.says("Are you there")
    await eventually(lambda: "transfer" in call.link.kinds(), "the default handoff after the failure")
    await call.session.on_news(TransferOutcome(answered=False, why="busy"))
    await eventually(lambda: call.link.kinds()[-1] == "hangup", "the unanswered fallback hung up")
    await call.session.close("socket_closed_1000")

    record = await call.record()
    payloads = {(e["source"], e["status"]): set(e["payload"]) for e in record["events"]}
    assert payloads[("dtmf", "digits")] == {"dtmf"}
    assert payloads[("supervisor", "listen")] == {"user"}
    assert payloads[("dialogue", "failure")] == {"caller_text", "reason", "said_before"}
    assert payloads[("transfer", "failed")] == {"department", "why"}
    actions = {a["type"]: a for a in record["actions"]}
    assert actions["tag"]["payload"] == {"tags": ["vip"]}
    assert {"transfer", "hangup"} <= set(actions)
    answered = record["turns"][1]
    assert answered["role"] == "caller" and list(answered["latency_ms"]) == [
        "endpoint_ms", "early_endpoint", "asr_ms", "asr_wait_ms", "asr_speculative_hit",
        "dialogue_first_text_ms", "tts_first_audio_ms", "response_ms",
    ]  # fmt: skip
    keypad = next(t for t in record["turns"] if t["text"] == "[keypad] 5")
    assert list(keypad["latency_ms"]) == [
        "source",
        "dialogue_first_text_ms",
        "tts_first_audio_ms",
        "response_ms",
    ]

    shapes = live_shapes(call.live_events_kept())
    assert shapes["tags"] == {"tags", "added", "reason"}
    assert shapes["supervisor"] == {"action", "department", "user"}
    assert shapes["dialogue.failure"] == {"reason"}
    assert shapes["transfer.failed"] == {"department", "why"}
    assert {"role", "text", "dtmf"} <= shapes["turn"]
    assert shapes["transcript.partial"] == {"text", "asr_ms"}
    assert [data["state"] for kind, data in call.live_events_kept() if kind == "state"][-2:] == [
        "speaking", "listening",
    ]  # fmt: skip
