"""Rule actions on whole calls: the shipped angry-caller rule tags the call and notifies the supervisors'
webhook without holding the transfer up; with an LLM, its intent reading fires a rule the YAML alone
would not have."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from agent.dialogue.scripted import IntentMatcher
from agent.escalation.signals import SignalTracker
from testkit.backends import FakeToolBackend
from testkit.caller_voice import caller_says
from testkit.llm_server import FakeLlmServer
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import REPO, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record
from tests.agent.test_escalation_calls import ANGRY, SENIOR, bridged_to, converse, fired

NOTIFY_SECRET = "notify-secret-5d2e"


def seconds(earlier: str, later: str) -> float:
    return (dt.datetime.fromisoformat(later) - dt.datetime.fromisoformat(earlier)).total_seconds()


def webhook_to(backend: FakeToolBackend) -> dict[str, Any]:
    url = f"{backend.base_url}/notify/supervisors"
    return {"supervisors": {"url": url, "secret_env": "HOTLINE_TEST_NOTIFY_SECRET", "retries": 0}}


@pytest.fixture(scope="module")
def backend() -> Iterator[FakeToolBackend]:
    os.environ["HOTLINE_TEST_NOTIFY_SECRET"] = NOTIFY_SECRET
    with FakeToolBackend() as server:
        yield server


@pytest.fixture(scope="module")
def notifying(tmp_path_factory: pytest.TempPathFactory, backend: FakeToolBackend) -> Iterator[Service]:
    changes = {"support_desk": {"webhooks": webhook_to(backend)}}
    with running_service(tmp_path_factory.mktemp("notify"), bots=changes) as service:
        yield service


async def test_an_angry_caller_is_tagged_and_supervisors_notified_without_delaying_the_transfer(
    notifying: Service, backend: FakeToolBackend
) -> None:
    backend.delay_s = 2.5  # the webhook answers slowly: the transfer must not wait for it
    try:
        record = await converse(notifying, ANGRY, until_transfer=True)
    finally:
        backend.delay_s = 0.0
    assert [r["rule"] for r in fired(record)] == ["angry_caller"] and bridged_to(record) == [SENIOR]
    assert record["tags"] == ["angry"]
    kinds = [a["type"] for a in record["actions"]]
    assert kinds[-3:] == ["tag", "notify", "pcmo"]
    tag, notify, bridge = record["actions"][-3:]
    assert tag["payload"] == {"tags": ["angry"]} and tag["reason"]["rule"] == "angry_caller"
    assert notify["payload"]["webhook"] == "supervisors"
    (sent,) = [e for e in record["events"] if e["source"] == "notify"]
    assert sent["status"] == "sent" and sent["payload"]["attempts"] == 1
    # The handoff line started at once, not after the webhook's 2.5 s: the notification ran beside it.
    handoff = [t for t in record["turns"] if t["role"] == "bot"][-1]
    assert handoff["text"] == "Let me connect you with a colleague who can help. Please stay on the line."
    assert seconds(notify["at"], handoff["started_at"]) < 0.5
    assert seconds(notify["at"], sent["at"]) > 2.0
    assert bridge["payload"][0]["action"] == "bridge"

    (request,) = [r for r in backend.requests if r.raw_path == "/notify/supervisors"]
    body = request.body
    assert body["call_id"] == record["call_id"] and body["tags"] == ["angry"]
    assert body["reason"]["rule"] == "angry_caller" and body["reason"]["caller_turn"] == 3
    assert body["signals"]["sentiment.rolling"] < -0.4
    assert [t["role"] for t in body["last_turns"]][-2:] == ["bot", "caller"]
    assert body["record"].endswith(f"/api/calls/{record['call_id']}")
    raw = json.dumps(body, separators=(",", ":")).encode()
    timestamp = request.headers["x-hotline-timestamp"]
    mac = hmac.new(NOTIFY_SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert request.headers["x-hotline-signature"] == f"sha256={mac}"


LEAVING = "I want to leave this bank."
BOT_RULES = yaml.safe_load((REPO / "prompts" / "support_desk.yaml").read_text())["escalation"]["rules"]


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        server.on(r"^Caller said: .*\bleav", reply="cancel")  # the intent reading
        server.on(r"leav", reply="I understand. Is there anything I can do to change your mind?")
        server.set_timing(ttft_s=0.3)
        yield server


@pytest.fixture(scope="module")
def classifying(
    tmp_path_factory: pytest.TempPathFactory, backend: FakeToolBackend, llm: FakeLlmServer
) -> Iterator[Service]:
    rule = {
        "name": "wants_to_leave",
        "when": "intent == cancel",
        "then": [{"tag": "churn_risk"}, {"transfer": "senior"}],
        "priority": 95,
        "once": True,
    }
    rules = [*BOT_RULES, rule]
    changes = {"support_desk": {"escalation": {"rules": rules, "llm_intents": {"enabled": True}}}}
    settings = {"base_url": llm.base_url, "model": "test-model", "first_token_timeout_s": 2.0, "timeout_s": 5}
    with running_service(tmp_path_factory.mktemp("classify"), bots=changes, llm=settings) as service:
        yield service


async def test_the_llms_intent_reading_fires_a_rule_the_yaml_would_miss(
    classifying: Service, llm: FakeLlmServer
) -> None:
    bot = classifying.settings.bots["support_desk"]
    assert SignalTracker(IntentMatcher(bot.intents)).intent_of(LEAVING) == (None, 0.0)  # YAML: no intent
    sim = PiopiySimulator(classifying.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        await call.say_pcm(caller_says(LEAVING), 8000)
        await call.wait_for_control(lambda c: getattr(c, "actions", None) is not None, timeout=20)
        call_id = call_id_of(call.pcmo)
    record = await final_record(classifying, call_id)
    (rule,) = fired(record)
    assert rule["rule"] == "wants_to_leave" and rule["trigger"] == "llm_intent"
    assert rule["caller_turn"] == 1 and rule["signals"] == {"intent": "cancel"}
    (caller,) = [t for t in record["turns"] if t["role"] == "caller"]
    assert caller["signals"]["intent"] == "cancel" and caller["signals"]["intent_source"] == "llm"
    assert record["tags"] == ["churn_risk"] and bridged_to(record) == [SENIOR]
    asked = [r for r in llm.requests if r["messages"][-1]["content"].startswith("Caller said: ")]
    assert len(asked) == 1 and asked[0]["stream"] is False
