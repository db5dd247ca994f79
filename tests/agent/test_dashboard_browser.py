"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): a supervisor logs in,
watches a simulated call's transcript and sentiment move live, clicks "Transfer to billing", and the
bridge reaches the simulator; then the ended call and the call history. Screenshots of every page go
to var/dashboard-screenshots/ (test output, not the repo)."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from agent.dashboard.auth import hash_password
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import REPO, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = REPO / "var" / "dashboard-screenshots"
PASSWORD = "watch-the-calls-42"
BILLING = [918040001101, 918040001102]


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is needed for the dashboard tests (scripts/install-test-debs.sh)")
    users = {"sam": hash_password(PASSWORD, iterations=1000)}
    with running_service(tmp_path_factory.mktemp("dash-browser"), dashboard={"users": users}) as service:
        yield service


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
        )
        try:
            yield launched
        finally:
            await launched.close()


async def shot(page: Page, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def is_bridge(control: Any) -> bool:
    return any(a.get("action") == "bridge" for a in getattr(control, "actions", None) or [])


async def test_a_supervisor_watches_a_call_live_and_transfers_it(
    dashboard: Service, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{dashboard.url}/dashboard")
    await page.fill("input[name=user]", "sam")
    await page.fill("input[name=password]", "wrong password")
    await page.click("button[type=submit]")
    await expect(page.locator("p.error")).to_contain_text("Wrong user or password")
    await shot(page, "login-failed")
    await page.fill("input[name=user]", "sam")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await expect(page.locator("#live-status")).to_contain_text("live call")

    sim = PiopiySimulator(dashboard.url, webhook_secret=WEBHOOK_SECRET)
    words = caller_says("This is ridiculous, nobody here ever helps me.")  # before the call: no stall
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        call_id = str(httpx.URL(call.ws_url).params["call"])
        # The live list picks the call up by itself (pushed over its socket).
        row = page.locator("#live-calls tbody tr", has_text=call_id)
        await expect(row).to_contain_text("support_desk", timeout=10_000)
        await shot(page, "live-calls")
        await row.locator("a").click()
        await expect(page.locator("[data-live-call]")).to_be_attached()
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
        # Listen in: the call's audio plays in the page (Web Audio), both sides.
        await page.click("#listen")
        await expect(page.locator("#listen")).to_have_text("Stop listening")

        # The caller speaks: the transcript and the sentiment move on the page as it happens.
        await call.say_pcm(words, 8000)
        said_at = call.now()
        events = page.locator("#events")
        await expect(events).to_contain_text("caller: ", timeout=15_000)
        await expect(events).to_contain_text("sentiment -", timeout=15_000)
        await expect(page.locator("#sentiment svg circle")).to_have_count(1)
        await call.wait_for_bot_audio(timeout=15, since=said_at)  # the bot answers…
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)  # …to the end
        heard = await page.evaluate("window.hotlineListen")
        speech_s = len(words) / 2 / 8000
        assert heard["seconds"][0] >= speech_s and heard["seconds"][1] >= 1.0, heard  # caller and bot
        assert heard["peak"] > 0.01, heard  # what was scheduled actually sounded at the output
        await expect(page.locator("#listen-status")).to_contain_text("listening: caller")
        await shot(page, "call-live")

        # "Transfer now": the bridge PCMO reaches the simulated platform.
        await page.click("text=Transfer to billing")
        bridge = await call.wait_for_control(is_bridge, timeout=15)
        assert [c["number"] for c in bridge.actions[0]["connect"]] == BILLING
        await expect(page.locator("body")).to_contain_text("Transfer requested")  # the flash after the POST
        await expect(page.locator("#events")).to_contain_text(
            '"by":"supervisor","user":"sam"', timeout=10_000
        )
        await shot(page, "call-transferred")

    # The ended call: recording, timeline, latencies; and the history, searchable.
    await page.goto(f"{dashboard.url}/dashboard/calls/{call_id}")
    await expect(page.locator("audio")).to_be_attached(timeout=10_000)
    timeline = page.locator("img.timeline")
    await expect(timeline).to_be_visible()
    assert await timeline.evaluate("img => img.complete && img.naturalWidth >= 1200")
    await shot(page, "call-ended")
    await page.goto(f"{dashboard.url}/dashboard/calls?search=nobody+here")
    await expect(page.locator("body")).to_contain_text("1 call(s)")
    await shot(page, "history-search")
