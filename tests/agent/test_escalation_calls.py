"""Escalation on whole calls through the real service with the shipped support_desk rules.

Each path of the rules, on spoken caller turns: asking for a person transfers at once, a caller who
grows angry over three turns goes to the senior desk at the third, two misunderstood turns escalate,
and a calm caller is never transferred. The record says which rule fired and on which signal values.
Each call is then replayed from its recording (the caller channel, fetched over the API, spoken into
a new call at its original times): the replay takes the same path at the same caller turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from testkit.caller_voice import caller_says
from testkit.replay import replay_stored
from testkit.simulator import PiopiySimulator, SimulatedCall
from tests.agent.conftest import REPO, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record

SENIOR = [918040001301, 918040001302]
ANGRY = [
    "What are your opening hours?",
    "This is ridiculous, that is not good enough.",
    "I am furious, this is useless and terrible.",
]


async def converse(service: Service, lines: list[str], *, until_transfer: bool) -> dict[str, Any]:
    """Say each line after the bot has finished; return the call's final record."""
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    async with (
        await sim.place_call(to_number=SUPPORT_NUMBER) as call,
        httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http,
    ):
        call_id = call_id_of(call.pcmo)
        await bot_finished(call, http, call_id, quiet_s=0.8)
        for line in lines:
            await call.say_pcm(caller_says(line), 8000)
            await call.wait_for_bot_audio(timeout=15, since=call.now())
            await bot_finished(call, http, call_id, quiet_s=1.0)
        if until_transfer:
            await call.wait_for_control(lambda c: getattr(c, "actions", None) is not None, timeout=10)
    return await final_record(service, call_id)


async def bot_finished(call: SimulatedCall, http: httpx.AsyncClient, call_id: str, *, quiet_s: float) -> None:
    """The bot has said all it says now: nothing played for `quiet_s` and the service no longer shows
    the call speaking. Silence alone is not enough: on a busy machine a reply's next clause can take
    longer than `quiet_s` to synthesize, and a caller line said in that gap would cut the bot off."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:
        await call.wait_until_bot_silent(quiet_s=quiet_s, timeout=max(1.0, deadline - loop.time()))
        if call.stream_closed:
            return
        live = (await http.get("/api/live-calls")).raise_for_status().json()["calls"]
        state = next((c["state"] for c in live if c["call_id"] == call_id), None)
        if state not in ("greeting", "speaking"):
            return
        assert loop.time() < deadline, f"the call is still {state} after 30 s"
        await asyncio.sleep(0.1)


def told(record: dict[str, Any]) -> str:
    """The call in a few lines, for a failed assertion: each turn (when, who, what) and each rule fired."""
    turns = [f"{t['start_ms']!s:>7} {t['role']:>6}: {t['text']}" for t in record["turns"]]
    rules = [(r["rule"], r["caller_turn"], r["signals"]) for r in fired(record)]
    return "\n".join([*turns, f"fired: {rules}"])


async def replayed(service: Service, record: dict[str, Any]) -> dict[str, Any]:
    """The call made again from its recording; the new call's record."""
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=30) as http:
        return await replay_stored(sim, http, record["call_id"])


def path(record: dict[str, Any]) -> list[Any]:
    """What escalation did on a call: each rule fired (with its caller turn), then each bridge."""
    return [(r["rule"], r["caller_turn"]) for r in fired(record)] + bridged_to(record)


def fired(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        e["payload"] for e in record["events"] if (e["source"], e["status"]) == ("escalation", "rule_fired")
    ]


def bridged_to(record: dict[str, Any]) -> list[list[int]]:
    return [
        [c["number"] for c in a["payload"][0]["connect"]]
        for a in record["actions"]
        if a["type"] == "pcmo" and a["payload"][0]["action"] == "bridge"
    ]


async def test_asking_for_a_person_transfers_at_once(service: Service) -> None:
    record = await converse(service, ["Can I talk to a person, please?"], until_transfer=True)
    (rule,) = fired(record)
    assert rule["rule"] == "asked_for_human" and rule["signals"] == {"intent": "asked_for_human"}
    assert rule["trigger"] == "turn"
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[1:] == ["Of course. Let me connect you with a colleague."]  # the rule's line, no answer
    assert bridged_to(record) == [SENIOR]
    caller = next(t for t in record["turns"] if t["role"] == "caller")
    assert caller["signals"]["intent"] == "asked_for_human"
    assert path(await replayed(service, record)) == path(record) == [("asked_for_human", 1), SENIOR]


async def test_two_misunderstood_turns_escalate(service: Service) -> None:
    record = await converse(
        service, ["Purple monkey dishwasher.", "Banana telescope umbrella."], until_transfer=True
    )
    assert len(fired(record)) == 1, told(record)
    (rule,) = fired(record)
    assert rule["rule"] == "stuck" and rule["signals"] == {"misunderstood_in_a_row": 2}
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[1] == "Sorry, I didn't quite get that. Could you say it another way?"
    assert bot[2] == "Let me connect you with a colleague who can help. Please stay on the line."
    assert bridged_to(record) == [SENIOR]
    assert path(await replayed(service, record)) == path(record) == [("stuck", 2), SENIOR]


async def test_a_caller_growing_angry_goes_to_the_senior_desk_at_the_third_turn(service: Service) -> None:
    record = await converse(service, ANGRY, until_transfer=True)
    assert len(fired(record)) == 1, told(record)
    (rule,) = fired(record)
    assert rule["rule"] == "angry_caller"
    assert rule["signals"]["turns"] == 3 and rule["signals"]["sentiment.rolling"] < -0.4
    callers = [t for t in record["turns"] if t["role"] == "caller"]
    assert [c["signals"]["sentiment"] < 0 for c in callers] == [False, True, True]
    assert callers[2]["signals"]["sentiment_trend"] < 0
    assert bridged_to(record) == [SENIOR]
    again = await replayed(service, record)
    assert path(again) == path(record) == [("angry_caller", 3), SENIOR]
    assert [t["signals"]["sentiment"] < 0 for t in again["turns"] if t["role"] == "caller"] == [
        False, True, True
    ]  # fmt: skip


async def test_a_calm_caller_is_never_transferred(service: Service) -> None:
    lines = ["What are your opening hours?", "Okay, thank you very much.", "Are you open on Saturday?"]
    record = await converse(service, lines, until_transfer=False)
    assert fired(record) == [] and bridged_to(record) == [], told(record)
    callers = [t for t in record["turns"] if t["role"] == "caller"]
    assert len(callers) == 3 and all(c["signals"]["sentiment"] >= 0 for c in callers)
    again = await replayed(service, record)
    assert path(again) == [] and [t["role"] for t in again["turns"]] == [t["role"] for t in record["turns"]]


@pytest.fixture(scope="module")
def quiet_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """support_desk with a 2 s silence timeout and a rule: a second silence ends the call politely."""
    rules = yaml.safe_load((REPO / "prompts" / "support_desk.yaml").read_text())["escalation"]["rules"]
    rules.append(
        {
            "name": "caller_gone",
            "when": "silence_timeouts >= 2",
            "then": [{"say": "I'll hang up now. Goodbye!"}, "hangup"],
            "once": True,
        }
    )
    changes = {"support_desk": {"turn_taking": {"silence_timeout_s": 2.0}, "escalation": {"rules": rules}}}
    with running_service(tmp_path_factory.mktemp("quiet"), bots=changes) as service:
        yield service


async def test_silence_asks_if_the_caller_is_there_then_the_rule_hangs_up(quiet_service: Service) -> None:
    sim = PiopiySimulator(quiet_service.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        frame = await call.wait_for_control(
            lambda c: any(a.get("action") == "hangup" for a in getattr(c, "actions", None) or []), timeout=20
        )
        call_id = call_id_of(call.pcmo)
    assert frame is not None
    record = await final_record(quiet_service, call_id)
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[1:] == ["Are you still there?", "I'll hang up now. Goodbye!"]
    (rule,) = fired(record)
    assert rule["rule"] == "caller_gone" and rule["trigger"] == "silence"
    assert rule["signals"] == {"silence_timeouts": 2}


async def ask_for_a_person(call: SimulatedCall) -> None:
    """After the greeting, ask for a person and wait for the bridge."""
    await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
    await call.say_pcm(caller_says("Can I talk to a person, please?"), 8000)
    await call.wait_for_control(lambda c: getattr(c, "actions", None) is not None, timeout=20)


async def test_an_unanswered_transfer_gets_the_apology_and_a_hangup(service: Service) -> None:
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await ask_for_a_person(call)
        await call.event("ringing", leg="b")
        await call.event("hangup", leg="b")  # nobody picked up
        frame = await call.wait_for_control(
            lambda c: any(a.get("action") == "hangup" for a in getattr(c, "actions", None) or []), timeout=20
        )
        call_id = call_id_of(call.pcmo)
    assert frame is not None
    record = await final_record(service, call_id)
    failed = [e["payload"] for e in record["events"] if (e["source"], e["status"]) == ("transfer", "failed")]
    assert failed == [{"department": "senior", "why": "hangup"}]
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[-1] == "Sorry, nobody is free to take your call right now. Please call again later. Goodbye."


async def test_an_answered_transfer_is_recorded_and_the_bot_stays_quiet(service: Service) -> None:
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await ask_for_a_person(call)
        await call.event("out_answered", leg="b")
        await call.say_pcm(caller_says("Hi, I need help with my card."), 8000)
        await call.silence(2.0)
        call_id = call_id_of(call.pcmo)
    record = await final_record(service, call_id)
    statuses = [(e["source"], e["status"]) for e in record["events"]]
    assert ("transfer", "answered") in statuses and ("transfer", "failed") not in statuses
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[-1] == "Of course. Let me connect you with a colleague."  # nothing after the handoff
    assert [t["text"] for t in record["turns"] if t["role"] == "caller"][-1].lower().startswith("hi")
