"""Multilingual whole calls through the real service: real Spanish speech (Debian's Asterisk prompts),
the multilingual Whisper base, the shipped international desk.

- With an LLM endpoint (our OpenAI-compatible test server, through the real openai SDK): a Spanish
  caller is detected within two turns, handed to the interpreter desk (no Spanish voice ships), and
  what they say next reaches the supervisor's live view with its English interpretation.
- With a Spanish voice configured (the English joe .onnx stands in for one: no Spanish voice ships),
  the scripted bot answers the Spanish caller in Spanish, through that voice's own phrase cache.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from playwright.async_api import Browser, expect
from websockets.asyncio.client import connect

from agent.dashboard.auth import hash_password
from pipelines.models import piper_voice_files
from testkit.caller_voice import asterisk_prompt
from testkit.llm_server import FakeLlmServer
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import REPO, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record
from tests.agent.test_dashboard_browser import PASSWORD, browser, shot

__all__ = ["browser"]  # the Chromium fixture, shared with the dashboard's browser test

DESK_NUMBER = "918040003000"
INTERPRETERS = [918040003101, 918040003102]
SPANISH_PHRASES = yaml.safe_load((REPO / "prompts" / "international_desk.yaml").read_text())["languages"][
    "phrases"
]["es"]
ENGLISH = {
    "comenzará": "The conference will begin when the leader arrives.",
    "expulsado": "You have been removed from this conference by the system.",
}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        for words, english in ENGLISH.items():
            server.on(rf"^Translate into English from Spanish: .*{words}", reply=english)
        yield server


@pytest.fixture(scope="module")
def with_llm(tmp_path_factory: pytest.TempPathFactory, llm: FakeLlmServer) -> Iterator[Service]:
    settings = {"base_url": llm.base_url, "model": "test-model", "first_token_timeout_s": 2.0, "timeout_s": 5}
    users = {"dashboard": {"users": {"sam": hash_password(PASSWORD, iterations=1000)}}}
    with running_service(tmp_path_factory.mktemp("languages-llm"), llm=settings, **users) as service:
        yield service


def sim(service: Service) -> PiopiySimulator:
    return PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)


async def test_a_spanish_caller_goes_to_interpreters_and_supervisors_read_english(
    with_llm: Service, llm: FakeLlmServer, browser: Browser
) -> None:
    live_url = with_llm.url.replace("http", "ws", 1) + "/api/live"
    seen: list[dict[str, Any]] = []
    async with connect(live_url, additional_headers=with_llm.api_headers) as viewer:

        async def watch() -> None:
            async for message in viewer:
                seen.append(json.loads(message))

        watcher = asyncio.create_task(watch())
        async with await sim(with_llm).place_call(to_number=DESK_NUMBER) as call:
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            await call.say_pcm(asterisk_prompt("es/conf-onlyperson"), 8000)
            bridge = await call.wait_for_control(
                lambda c: getattr(c, "actions", None) is not None, timeout=30
            )
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            # A supervisor opens the call in the dashboard (real Chromium)…
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{with_llm.url}/dashboard/login?next=/dashboard/calls/{call_id_of(call.pcmo)}")
            await page.fill("input[name=user]", "sam")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await expect(page.locator("[data-live-call]")).to_be_attached()
            # …while, with a person at the interpreter desk, the caller goes on in Spanish.
            for prompt in ("es/conf-waitforleader", "es/conf-kicked"):
                await call.say_pcm(asterisk_prompt(prompt), 8000)
                await call.silence(1.5)
            for _ in range(100):
                if sum(1 for e in seen if e["kind"] == "turn" and e["data"].get("interpretation")) >= 2:
                    break
                await asyncio.sleep(0.1)
            call_id = call_id_of(call.pcmo)
            # The supervisor reads the English interpretation beside the Spanish, live.
            events = page.locator("#events")
            for english in ENGLISH.values():
                await expect(events).to_contain_text(f"[es → en] {english}", timeout=10_000)
            await expect(events).to_contain_text("comenzará")
            await shot(page, "call-interpreted")
        await asyncio.sleep(0.3)
        watcher.cancel()
    assert [c["number"] for c in bridge.actions[0]["connect"]] == INTERPRETERS  # type: ignore[attr-defined]

    (detected,) = [e["data"] for e in seen if e["kind"] == "language"]
    assert detected["language"] == "es" and detected["turns"] <= 2 and not detected["supported"]
    (fired,) = [e["data"] for e in seen if e["kind"] == "escalation"]
    assert fired["rule"] == "language_unsupported" and fired["caller_turn"] <= 2
    interpreted = [e["data"] for e in seen if e["kind"] == "turn" and e["data"].get("interpretation")]
    assert [t["translation"] for t in interpreted] == list(ENGLISH.values())
    assert all(t["monitor"] and t["language"] == "es" for t in interpreted)
    assert "comenzará" in interpreted[0]["text"].lower()

    record = await final_record(with_llm, call_id)
    assert record["meta"]["language"] == "es"
    monitored = [t for t in record["turns"] if t["role"] == "caller" and t.get("translation")]
    assert [t["translation"]["text"] for t in monitored] == list(ENGLISH.values())
    assert all(t["translation"]["from"] == "es" and t["translation"]["to"] == "en" for t in monitored)
    assert "comenzará" in monitored[0]["text"].lower()  # the original stays beside it
    asked = [r for r in llm.requests if "Translate" in r["messages"][-1]["content"]]
    assert len(asked) == 2 and all(r["temperature"] == 0 for r in asked)


def spanish_voice() -> dict[str, Any]:
    joe, _ = piper_voice_files("en_US-joe-medium")  # stands in for a Spanish voice: none ships
    return {"international_desk": {"languages": {"voices": {"es": str(joe)}}}}


async def test_with_a_spanish_voice_the_caller_is_answered_in_spanish(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_service(tmp_path_factory.mktemp("languages-voice"), bots=spanish_voice()) as service:
        async with await sim(service).place_call(to_number=DESK_NUMBER) as call:
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            await call.say_pcm(asterisk_prompt("es/conf-onlyperson"), 8000)
            await call.wait_for_bot_audio(timeout=20, since=call.now())
            await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
            call_id = call_id_of(call.pcmo)
        record = await final_record(service, call_id)
    (detected,) = [
        e["payload"] for e in record["events"] if (e["source"], e["status"]) == ("asr", "language")
    ]
    assert detected["language"] == "es" and detected["supported"] and detected["reply_language"] == "es"
    bot = [t["text"] for t in record["turns"] if t["role"] == "bot"]
    assert bot[1:] == [SPANISH_PHRASES["rephrase"]]  # the Spanish script line, in the Spanish voice
    assert not [a for a in record["actions"] if a["type"] == "pcmo"]  # no transfer: answered
