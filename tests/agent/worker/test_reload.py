"""Rules hot-reload from YAML (`POST /api/reload`) without dropping a live call; bad YAML changes nothing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record

OLD_LINE = "Of course. Let me connect you with a colleague."
NEW_LINE = "Right away. A colleague will take it from here."


@pytest.fixture(scope="module")
def editable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("reload")) as service:
        yield service


async def reload(service: Service) -> httpx.Response:
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers) as http:
        return await http.post("/api/reload")


async def test_rules_reload_while_a_call_is_live(editable: Service) -> None:
    bot_file = editable.settings.files["support_desk"]
    sim = PiopiySimulator(editable.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as live:
        await live.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        bot_file.write_text(bot_file.read_text().replace(OLD_LINE, NEW_LINE))
        response = await reload(editable)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body["reloaded"]) == {"support_desk", "order_line", "international_desk"}
        assert body["restart_needed"] == [] and body["live_calls"] == 1
        # The live call goes on, and its rules are the new ones.
        await live.say_pcm(caller_says("Can I talk to a person, please?"), 8000)
        await live.wait_for_control(lambda c: getattr(c, "actions", None) is not None, timeout=20)
        live_id = call_id_of(live.pcmo)
    record = await final_record(editable, live_id)
    assert [t["text"] for t in record["turns"] if t["role"] == "bot"][-1] == NEW_LINE
    assert record["status"] == "completed"


async def test_broken_yaml_is_refused_with_file_and_line_and_changes_nothing(editable: Service) -> None:
    bot_file = editable.settings.files["support_desk"]
    good = bot_file.read_text()
    bot_file.write_text(good.replace("when: misunderstood_in_a_row >= 2", "when: moon_phase >= 2"))
    try:
        response = await reload(editable)
    finally:
        bot_file.write_text(good)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid config: nothing reloaded"
    assert "support_desk.yaml:" in body["detail"] and "no signal named 'moon_phase'" in body["detail"]
    assert "escalation.rules" in body["detail"]
