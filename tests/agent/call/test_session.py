"""CallSession through a fake link, transcriber and dialogue: barge-in, backchannels, early ends,
transfers, a supervisor's order racing an answer, keypad digits mid-reply. No real-time waits beyond the
few hundred milliseconds of audio the stand-in voice plays."""

from __future__ import annotations

import asyncio

import pytest

from agent.call import actions as actions_module
from agent.call.state import CallState
from agent.dialogue.base import DialogueAction
from agent.telephony.carrier import Dtmf, Hangup, TransferOutcome
from tests.agent.call.conftest import Call, silence, speech
from tests.agent.faults import eventually

LONG = "Our branches open at nine in the morning and close at five in the evening, every weekday of the year."
QUESTION = "When are your branches open"


def events(record: dict, source: str, status: str) -> list[dict]:
    return [e["payload"] for e in record["events"] if (e["source"], e["status"]) == (source, status)]


def bot_turns(record: dict) -> list[dict]:
    return [t for t in record["turns"] if t["role"] == "bot"]


async def test_barge_in_cuts_the_reply_and_clears_the_line(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [LONG]
    call.says(QUESTION)
    await call.replying()
    call.says("Wait, what about Saturdays", then_silence_s=0.0)  # over the bot
    await eventually(lambda: "clear" in call.link.kinds(), "the line was cleared")
    assert call.link.kinds()[-1] == "clear"  # nothing of the reply left after the clear
    await eventually(lambda: bool(call.dialogue.heard_calls), "the dialogue heard what was cut")
    said, heard = call.dialogue.heard_calls[0]
    assert LONG.startswith(said) and said.startswith(heard) and len(heard) < len(LONG)
    record = await call.record()
    (barge_in,) = events(record, "turns", "barge_in")
    assert barge_in["detected_after_ms"] >= 0
    cut = bot_turns(record)[1]
    assert cut["interrupted"] and cut["heard_text"] == heard


async def test_a_backchannel_over_the_bot_resumes_the_cut_reply(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [LONG]
    call.says(QUESTION)
    await call.replying()
    call.says("Okay.", then_silence_s=0.0)
    await eventually(lambda: "clear" in call.link.kinds(), "the barge-in cleared the line")
    call.session.on_audio(silence(1.0))  # the turn ends (600 ms of silence after the barge-in)
    await eventually(lambda: call.link.kinds()[-1] == "audio", "the bot picked up where it was")
    record = await call.record()
    (backchannel,) = events(record, "turns", "backchannel")
    assert backchannel == {"text": "Okay.", "resumed": True}
    assert call.dialogue.asked == [QUESTION]  # "Okay." was never a turn for the dialogue


async def test_a_sentence_ends_the_turn_early_and_a_caller_who_goes_on_makes_one_turn(call: Call) -> None:
    call.dialogue.replies[QUESTION + "?"] = [LONG]
    call.asr.text = QUESTION + "?"  # a whole sentence at the first pause: semantic endpointing
    call.session.on_audio(speech() + silence(0.25))
    await eventually(lambda: call.dialogue.asked == [QUESTION + "?"], "the early turn was answered")
    assert call.session.turns.in_turn is False
    call.asr.text = "and on Saturdays?"
    call.session.on_audio(speech() + silence(1.0))  # the caller goes on within end_silence_ms
    await eventually(lambda: call.dialogue.retracted == 1, "the answer was taken back")
    await eventually(lambda: len(call.dialogue.asked) == 2, "the whole turn was answered")
    assert call.dialogue.asked[1] == f"{QUESTION}? and on Saturdays?"
    record = await call.record()
    (continued,) = events(record, "turns", "continued")
    assert continued["text"] == f"{QUESTION}? and on Saturdays?"
    assert [t["text"] for t in record["turns"] if t["role"] == "caller"] == [continued["text"]]


async def test_a_transfer_answered_hands_the_call_off(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [
        "Putting you through.",
        DialogueAction(kind="transfer", department="billing"),
    ]
    call.says(QUESTION)
    await eventually(lambda: "transfer" in call.link.kinds(), "the transfer was sent")
    assert call.session.state == "handed_off"
    await call.session.on_news(TransferOutcome(answered=True, why="answered"))
    record = await call.record()
    assert events(record, "transfer", "answered") == [{"department": "billing"}]
    assert not events(record, "transfer", "failed")
    asked = len(call.dialogue.asked)
    call.says("Hello, is someone there")  # the human answers now: the bot keeps quiet

    async def kept() -> bool:
        return len([t for t in (await call.record())["turns"] if t["role"] == "caller"]) == 2

    await eventually(kept, "the caller's words after the handoff were kept")
    assert len(call.dialogue.asked) == asked


async def test_a_transfer_unanswered_runs_the_fallback_and_hangs_up(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [DialogueAction(kind="transfer", department="billing")]
    call.says(QUESTION)
    await eventually(lambda: "transfer" in call.link.kinds(), "the transfer was sent")
    await call.session.on_news(TransferOutcome(answered=False, why="busy"))
    await eventually(lambda: call.link.kinds()[-1] == "hangup", "the bot hung up")
    assert call.link.kinds()[-2] == "audio"  # the unanswered line, before the hang-up
    record = await call.record()
    assert events(record, "transfer", "failed") == [{"department": "billing", "why": "busy"}]
    assert call.session.state is CallState.HUNG_UP  # the bot hung up


async def test_a_transfer_nobody_answers_fails_when_the_watchdog_runs_out(
    call: Call, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The department rings 30 s; the grace makes the watchdog's limit 0.05 s.
    monkeypatch.setattr(actions_module, "TRANSFER_GRACE_S", -29.95)
    call.dialogue.replies[QUESTION] = [DialogueAction(kind="transfer", department="billing")]
    call.says(QUESTION)
    await eventually(lambda: call.link.kinds()[-1:] == ["hangup"], "the watchdog gave up and the bot hung up")
    record = await call.record()
    assert events(record, "transfer", "failed") == [{"department": "billing", "why": "no_answer"}]
    await call.session.on_news(TransferOutcome(answered=True, why="answered"))  # too late: ignored
    assert not events(await call.record(), "transfer", "answered")


async def test_a_supervisor_transfer_wins_over_the_answer_being_worked_out(call: Call) -> None:
    call.dialogue.gate = asyncio.Event()  # the dialogue is still thinking
    call.says(QUESTION)
    await eventually(lambda: call.dialogue.asked == [QUESTION], "the dialogue was asked")
    await call.session.supervise("transfer", "billing", "alice")
    await eventually(lambda: "transfer" in call.link.kinds(), "the supervisor's transfer was sent")
    sent_before = len(call.link.sent)
    call.dialogue.gate.set()  # the answer arrives after the handoff: nobody says it
    await asyncio.sleep(0.05)
    assert len(call.link.sent) == sent_before
    record = await call.record()
    (order,) = [a for a in record["actions"] if a["type"] == "supervisor"]
    assert order["payload"] == {"action": "transfer", "department": "billing"}
    assert call.session.state == "handed_off"


async def test_keypad_digits_mid_reply_interrupt_it_and_are_answered(call: Call) -> None:
    call.dialogue.replies[QUESTION] = [LONG]
    call.says(QUESTION)
    await call.replying()
    await call.session.on_news(Dtmf("5"))
    assert "clear" in call.link.kinds()
    await eventually(lambda: call.dialogue.asked[-1:] == ["[keypad] 5"], "the digits were answered")
    record = await call.record()
    assert events(record, "dtmf", "digits") == [{"dtmf": "5"}]
    assert bot_turns(record)[1]["interrupted"]


async def test_the_carrier_saying_the_caller_hung_up_ends_the_call_as_theirs(call: Call) -> None:
    await call.session.on_news(Hangup())
    await call.session.close("socket_closed_1000")
    record = await call.record()
    assert record["end_reason"] == "caller_hangup"
