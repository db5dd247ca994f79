"""Prometheus metrics: what the hooks count, per-Runtime registries, and /metrics on a real call."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.config.settings import load_settings
from agent.web.api_keys import ApiKeys, key_hash
from agent.web.app import create_app
from agent.worker.loop_lag import LoopLagMonitor
from agent.worker.metrics import CONTENT_TYPE, Metrics, call_outcome, transfer_rule
from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import API_KEY, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, write_config
from tests.agent.test_calls import call_id_of, final_record


def value(text: str | bytes, sample: str, **labels: str) -> float | None:
    """One sample of the text exposition (None: not there)."""
    if isinstance(text, bytes):
        text = text.decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None


def test_hooks_count_calls_transfers_barge_ins_and_errors() -> None:
    m = Metrics()
    m.call_ended("support_desk", "completed")
    m.call_ended("support_desk", "completed")
    m.call_ended("unknown", "unrouted")
    m.transfer("support_desk", "senior", {"rule": "angry_caller", "priority": 0, "trigger": "turn"})
    m.transfer("support_desk", "billing", {"intent": "billing", "confidence": 0.9})
    m.transfer("order_line", "returns", {"by": "llm", "tool": "transfer_to_department"})
    m.transfer("support_desk", "senior", {"trigger": "dialogue_failure", "reason": "unreachable"})
    m.barge_in("support_desk")
    m.error("support_desk", "dialogue", "first_token_timeout")
    m.error("order_line", "tool", "timeout")
    text = m.render()
    assert value(text, "hotline_calls_total", bot="support_desk", outcome="completed") == 2
    assert value(text, "hotline_calls_total", bot="unknown", outcome="unrouted") == 1
    assert value(text, "hotline_calls_total", bot="support_desk", outcome="dropped") is None
    transfers = "hotline_transfers_total"
    assert value(text, transfers, bot="support_desk", department="senior", rule="angry_caller") == 1
    assert value(text, transfers, bot="support_desk", department="billing", rule="intent:billing") == 1
    assert value(text, transfers, bot="order_line", department="returns", rule="tool") == 1
    assert value(text, transfers, bot="support_desk", department="senior", rule="dialogue_failure") == 1
    assert value(text, "hotline_barge_ins_total", bot="support_desk") == 1
    errors = "hotline_errors_total"
    assert value(text, errors, bot="support_desk", stage="dialogue", kind="first_token_timeout") == 1
    assert value(text, errors, bot="order_line", stage="tool", kind="timeout") == 1


def test_turn_latency_feeds_one_histogram_per_stage_in_seconds() -> None:
    m = Metrics()
    m.turn_latency(
        "support_desk",
        {
            "endpoint_ms": 700,
            "early_endpoint": False,
            "asr_ms": 560,
            "asr_wait_ms": 3,
            "asr_speculative_hit": True,
        },
    )
    m.turn_latency(
        "support_desk", {"dialogue_first_text_ms": None, "tts_first_audio_ms": 120, "response_ms": 850}
    )
    text = m.render()
    bot = {"bot": "support_desk"}
    assert value(text, "hotline_endpoint_seconds_count", **bot) == 1
    assert value(text, "hotline_endpoint_seconds_sum", **bot) == pytest.approx(0.7)
    assert value(text, "hotline_endpoint_seconds_bucket", le="0.5", **bot) == 0
    assert value(text, "hotline_endpoint_seconds_bucket", le="0.75", **bot) == 1
    assert value(text, "hotline_asr_seconds_sum", **bot) == pytest.approx(0.56)
    assert value(text, "hotline_tts_first_audio_seconds_bucket", le="0.2", **bot) == 1
    assert value(text, "hotline_response_seconds_bucket", le="0.75", **bot) == 0
    assert value(text, "hotline_response_seconds_bucket", le="1.0", **bot) == 1
    assert value(text, "hotline_response_seconds_bucket", le="+Inf", **bot) == 1
    # No first text (a None): not observed; the keys that are not stages (asr_wait_ms) feed nothing.
    assert value(text, "hotline_dialogue_first_text_seconds_count", **bot) is None
    assert "asr_wait" not in text.decode()


def test_each_metrics_has_its_own_registry() -> None:
    one, two = Metrics(), Metrics()  # a second set of the same names does not clash
    one.call_ended("support_desk", "completed")
    one.turn_latency("support_desk", {"response_ms": 400})
    assert value(one.render(), "hotline_calls_total", bot="support_desk", outcome="completed") == 1
    assert value(two.render(), "hotline_calls_total", bot="support_desk", outcome="completed") is None
    assert value(two.render(), "hotline_response_seconds_count", bot="support_desk") is None
    assert one.registry is not two.registry


def test_live_values_are_read_at_scrape_time() -> None:
    lag = LoopLagMonitor()
    lag.samples.extend([1.0] * 98 + [30.0, 80.0])  # milliseconds late
    runtime = SimpleNamespace(
        calls=SimpleNamespace(sessions={"c_1": SimpleNamespace(bot_name="support_desk")}),
        settings=SimpleNamespace(bots={"support_desk": None, "order_line": None}),
        loop_lag=lag,
        executor=SimpleNamespace(queue_depth=3),
        writer=SimpleNamespace(pending=7, written_late=2, dropped=1, failed_attempts=6),
        recordings=SimpleNamespace(pending=2, failures=3),
        cluster=SimpleNamespace(dropped=4, audio_dropped=5),
    )
    m = Metrics(runtime)  # type: ignore[arg-type]
    text = m.render()
    assert value(text, "hotline_record_writes_pending") == 7
    assert value(text, "hotline_record_writes_late_total") == 2
    assert value(text, "hotline_record_writes_dropped_total") == 1
    assert value(text, "hotline_live_events_unshared_total") == 9
    assert value(text, "hotline_store_write_failures_total") == 6
    assert value(text, "hotline_recording_finalizes_pending") == 2
    assert value(text, "hotline_recording_write_failures_total") == 3
    assert value(text, "hotline_active_calls", bot="support_desk") == 1
    assert value(text, "hotline_active_calls", bot="order_line") == 0
    assert value(text, "hotline_event_loop_lag_seconds", quantile="0.5") == pytest.approx(0.001)
    assert value(text, "hotline_event_loop_lag_seconds", quantile="0.99") == pytest.approx(0.08)
    assert value(text, "hotline_event_loop_lag_seconds", quantile="1.0") == pytest.approx(0.08)
    assert value(text, "hotline_model_queue_depth") == 3
    runtime.calls.sessions.clear()
    runtime.executor.queue_depth = 0
    text = m.render()
    assert value(text, "hotline_active_calls", bot="support_desk") == 0
    assert value(text, "hotline_model_queue_depth") == 0


@pytest.mark.parametrize(
    ("handed_off", "hung_up", "dropped", "outcome"),
    [
        (False, False, False, "completed"),
        (False, False, True, "dropped"),
        (False, True, False, "bot_hangup"),
        (True, False, True, "transferred"),
        (True, True, False, "transferred"),
    ],
)
def test_call_outcome(handed_off: bool, hung_up: bool, dropped: bool, outcome: str) -> None:
    assert call_outcome(handed_off=handed_off, bot_hung_up=hung_up, dropped=dropped) == outcome


def test_transfer_rule_names_what_asked_for_it() -> None:
    assert transfer_rule({"rule": "stuck", "intent": "x"}) == "stuck"
    assert transfer_rule({"intent": "asked_for_human"}) == "intent:asked_for_human"
    assert transfer_rule({"by": "llm", "tool": "transfer_to_department"}) == "tool"
    assert transfer_rule({"trigger": "transfer_failed", "department": "billing"}) == "transfer_failed"
    assert transfer_rule({"by": "supervisor"}) == "supervisor"
    assert transfer_rule({}) == "unknown"


@pytest.mark.parametrize("public", [False, True])
def test_metrics_needs_an_api_key_unless_public(tmp_path: Path, public: bool) -> None:
    settings = load_settings(write_config(tmp_path, server={"metrics_public": public}))

    async def no_stored_key(key_hash: str) -> None:
        return None

    runtime = SimpleNamespace(
        settings=settings,
        metrics=Metrics(),
        webhook_secret=WEBHOOK_SECRET,
        api_keys=ApiKeys({"tests": key_hash(API_KEY)}, SimpleNamespace(api_key_name=no_stored_key)),  # type: ignore[arg-type]
        refusal=lambda host, platform: None,
        auth_failed=lambda host, surface: None,
    )
    with TestClient(create_app(settings, runtime=runtime)) as client:  # type: ignore[arg-type]
        assert client.get("/metrics").status_code == (200 if public else 401)
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        assert ok.status_code == 200 and ok.headers["content-type"] == CONTENT_TYPE
        assert client.get("/metrics", headers={"X-Hotline-Api-Key": API_KEY}).status_code == 200
        webhook_secret = client.get("/metrics", headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
        assert webhook_secret.status_code == (200 if public else 401)


async def scrape(http: httpx.AsyncClient) -> str:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return response.text


async def test_a_call_shows_up_in_metrics(service: Service) -> None:
    completed = {"bot": "support_desk", "outcome": "completed"}
    bot = {"bot": "support_desk"}
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http:
        async with httpx.AsyncClient(base_url=service.url) as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        for _ in range(150):  # the service is shared: let earlier tests' calls end first
            if not (await http.get("/healthz")).json()["active_calls"]:
                break
            await asyncio.sleep(0.1)
        before = await scrape(http)

        sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET)
        async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
            await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
            during = await scrape(http)
            assert value(during, "hotline_active_calls", **bot) == 1 + (
                value(before, "hotline_active_calls", **bot) or 0
            )
            await call.say_pcm(caller_says("What are your opening hours?"), 8000)
            await call.wait_for_bot_audio(timeout=15, since=call.now())
            await call.wait_until_bot_silent(quiet_s=1.0, timeout=20)
            call_id = call_id_of(call.pcmo)
        record = await final_record(service, call_id)
        assert record["status"] == "completed"
        await http.post(
            "/piopiy/answer", json={"from": "919876543210", "to": "911111111111", "cmiuuid": "m-1"}
        )
        after = await scrape(http)

    def delta(sample: str, **labels: str) -> float:
        return (value(after, sample, **labels) or 0) - (value(before, sample, **labels) or 0)

    assert delta("hotline_calls_total", **completed) == 1
    assert delta("hotline_calls_total", bot="unknown", outcome="unrouted") == 1
    assert delta("hotline_asr_seconds_count", **bot) >= 1
    assert delta("hotline_endpoint_seconds_count", **bot) >= 1
    assert delta("hotline_response_seconds_count", **bot) >= 1
    assert delta("hotline_transfers_total", bot="support_desk", department="senior", rule="angry_caller") == 0
    assert value(after, "hotline_active_calls", **bot) == value(before, "hotline_active_calls", **bot)
    assert value(after, "hotline_model_queue_depth") is not None
