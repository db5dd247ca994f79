"""Rule actions beyond speech and transfer: `tag`, `notify` (webhooks over real HTTP), and the LLM's
intent reading (against our OpenAI-compatible server through the real SDK)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from agent.config.actions import ActionSpec, Webhook
from agent.config.bot import BotConfig
from agent.config.checks import reference_problems
from agent.config.settings import load_settings
from agent.escalation import llm_intent
from agent.escalation.notify import Notifier, sign
from testkit.backends import FakeToolBackend
from testkit.llm_server import FakeLlmServer

REPO = Path(__file__).resolve().parents[2]
BOTS = load_settings(REPO / "config.yaml").bots
SECRET = "whsec-test-8c1f"


def bot_with(rules: list[dict[str, Any]], webhooks: dict[str, Any] | None = None) -> BotConfig:
    data = BOTS["support_desk"].model_dump(exclude_none=True)
    data["escalation"] = {"rules": rules}
    data["webhooks"] = webhooks or {}
    return BotConfig.model_validate(data)


# ------------------------------------------------------------------------------------- config


def test_tag_takes_one_label_or_a_list() -> None:
    assert ActionSpec.model_validate({"tag": "angry"}).tag == ["angry"]
    assert ActionSpec.model_validate({"tag": ["angry", "vip"]}).kind == "tag"
    for bad in ("Angry Caller", [], ["ok", "no spaces"]):
        with pytest.raises(ValidationError, match="tag"):
            ActionSpec.model_validate({"tag": bad})
    with pytest.raises(ValidationError, match="exactly one of: say, transfer, tool, notify, tag"):
        ActionSpec.model_validate({"tag": "x", "notify": "y"})


@pytest.mark.parametrize(
    ("then", "webhooks", "loc", "problem"),
    [
        (
            [{"notify": "slack"}],
            {"crm": {"url": "https://crm.example/hook"}},
            ("escalation", "rules", 0, "then", 0, "notify"),
            "no webhook 'slack' (webhooks: crm)",
        ),
        (
            [{"tool": "account_balance"}],
            None,
            ("escalation", "rules", 0, "then", 0, "tool"),
            "tools run from intents or the LLM, not from here",
        ),
    ],
)
def test_rule_actions_are_checked_against_the_yaml(
    then: list[dict[str, Any]], webhooks: dict[str, Any] | None, loc: tuple[Any, ...], problem: str
) -> None:
    bot = bot_with([{"name": "r", "when": "turns >= 1", "then": then}], webhooks)
    assert (loc, problem) in reference_problems(bot)


def test_webhook_urls_and_secret_names_are_validated() -> None:
    with pytest.raises(ValidationError, match="url"):
        Webhook(url="ftp://example.com/hook")
    with pytest.raises(ValidationError, match="secret_env"):
        Webhook(url="https://example.com/hook", secret_env="lower-case")


# ------------------------------------------------------------------------------------- notify


@pytest.fixture(scope="module")
def _receiver() -> Iterator[FakeToolBackend]:
    with FakeToolBackend() as backend:
        yield backend


@pytest.fixture
def receiver(_receiver: FakeToolBackend) -> FakeToolBackend:
    _receiver.delay_s, _receiver.notify_statuses = 0.0, []
    return _receiver


def sent_to(receiver: FakeToolBackend, name: str) -> list[Any]:
    return [r for r in receiver.requests if r.raw_path == f"/notify/{name}"]


async def test_a_signed_notification_verifies_with_the_shared_secret(receiver: FakeToolBackend) -> None:
    hook = Webhook(url=f"{receiver.base_url}/notify/signed", secret_env="NOTIFY_SECRET",
                   headers={"X-Team": "{env.TEAM}"})  # fmt: skip
    async with httpx.AsyncClient() as http:
        notifier = Notifier(http, env={"NOTIFY_SECRET": SECRET, "TEAM": "senior"})
        delivery = await notifier.send("signed", hook, {"call_id": "c1", "rule": "angry_caller"})
    assert delivery.ok and delivery.attempts == 1 and delivery.status == 200
    (request,) = sent_to(receiver, "signed")
    assert request.body == {"call_id": "c1", "rule": "angry_caller"}
    assert request.headers["x-team"] == "senior"
    timestamp = request.headers["x-hotline-timestamp"]
    assert abs(int(timestamp) - time.time()) < 5
    raw = json.dumps(request.body, separators=(",", ":")).encode()
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    assert request.headers["x-hotline-signature"] == f"sha256={expected}" == sign(SECRET, timestamp, raw)


async def test_server_errors_are_retried_and_refusals_are_not(
    receiver: FakeToolBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("agent.escalation.notify.BACKOFF_S", (0.01,))
    hook = Webhook(url=f"{receiver.base_url}/notify/flaky", retries=2)
    async with httpx.AsyncClient() as http:
        notifier = Notifier(http, env={})
        receiver.notify_statuses = [503, 429]
        retried = await notifier.send("flaky", hook, {"n": 1})
        receiver.notify_statuses = [400]
        refused = await notifier.send("flaky", hook, {"n": 2})
        receiver.notify_statuses = [500, 500, 500]
        gave_up = await notifier.send("flaky", hook, {"n": 3})
    assert (retried.ok, retried.attempts, retried.status) == (True, 3, 200)
    assert (refused.ok, refused.attempts, refused.error) == (False, 1, "HTTP 400")
    assert (gave_up.ok, gave_up.attempts, gave_up.error) == (False, 3, "HTTP 500")
    assert len(sent_to(receiver, "flaky")) == 3 + 1 + 3


async def test_a_slow_or_unreachable_receiver_is_a_failed_delivery(receiver: FakeToolBackend) -> None:
    receiver.delay_s = 1.0
    slow = Webhook(url=f"{receiver.base_url}/notify/slow", timeout_s=0.2, retries=0)
    gone = Webhook(url="http://127.0.0.1:9/notify/gone", retries=0)  # discard port: nothing listens
    unsigned = Webhook(url=f"{receiver.base_url}/notify/x", secret_env="NOT_SET_ANYWHERE")
    async with httpx.AsyncClient() as http:
        notifier = Notifier(http, env={})
        timed_out = await notifier.send("slow", slow, {})
        refused = await notifier.send("gone", gone, {})
        no_secret = await notifier.send("x", unsigned, {})
    assert (timed_out.ok, timed_out.error) == (False, "timeout") and timed_out.ms < 900
    assert (refused.ok, refused.error) == (False, "ConnectError")
    assert no_secret.as_dict() == {
        "webhook": "x", "ok": False, "attempts": 0, "ms": 0,
        "error": "the signing secret NOT_SET_ANYWHERE is not set",
    }  # fmt: skip


# ---------------------------------------------------------------------------------- LLM intent


@pytest.mark.parametrize(
    ("answer", "intent"),
    [
        ("cancel", "cancel"),
        ("Cancel.", "cancel"),
        ("intent: billing_question", "billing_question"),
        ("none", None),
        ("I think the caller wants to fly to the moon", None),
        ("", None),
    ],
)
def test_the_llm_answer_must_name_a_listed_intent(answer: str, intent: str | None) -> None:
    names = list(llm_intent.intent_labels(BOTS["support_desk"]))
    assert llm_intent.parse_answer(answer, names) == intent


def test_the_prompt_lists_yaml_and_builtin_intents_with_examples() -> None:
    labels = llm_intent.intent_labels(BOTS["support_desk"])
    assert labels["billing_question"].startswith('e.g. "I was charged twice"')
    assert {"asked_for_human", "cancel", "complaint", "balance"} <= set(labels)
    system, user = llm_intent.messages("I'm leaving your bank.", labels)
    assert "- cancel: wants to cancel" in system["content"]
    assert user["content"] == "Caller said: I'm leaving your bank.\nIntent:"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        server.on(r"^Caller said: .*leav", reply="cancel")
        yield server


async def test_classify_over_real_http(llm: FakeLlmServer) -> None:
    labels = llm_intent.intent_labels(BOTS["support_desk"])
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0)
    async with client:
        found = await llm_intent.classify(client, "test-model", "I'm leaving your bank.", labels, 2.0)
        unknown = await llm_intent.classify(client, "test-model", "Purple monkey.", labels, 2.0)
        llm.fail("500", times=1)
        failed = await llm_intent.classify(client, "test-model", "I'm leaving.", labels, 2.0)
        llm.set_timing(ttft_s=1.0)
        try:
            slow = await llm_intent.classify(client, "test-model", "I'm leaving.", labels, 0.3)
        finally:
            llm.set_timing(ttft_s=0.0)
    assert (found.intent, found.error) == ("cancel", None)
    assert (unknown.intent, unknown.error) == (None, None)  # the server's default reply names nothing
    assert (failed.intent, failed.error) == (None, "http_500")
    assert (slow.intent, slow.error) == (None, "timeout") and slow.ms < 900
    request = llm.requests[0]
    assert request["temperature"] == 0 and request["stream"] is False
