"""The HTTP surface: answer_url PCMO, webhooks, authentication, bad input, the call API."""

from __future__ import annotations

import json
import uuid
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from agent.telephony.piopiy.codec import stream_action
from tests.agent.conftest import ORDER_NUMBER, SUPPORT_NUMBER, Service


def answer_body(to: str | int = SUPPORT_NUMBER, **extra: object) -> dict[str, object]:
    return {"from": 919876543210, "to": to, "time": 1_700_000_000_000, "cmiuuid": str(uuid.uuid4()), **extra}


def test_answer_streams_to_the_bot_owning_the_number(service: Service) -> None:
    with service.client() as http:
        body = answer_body(action="inbound")
        response = http.post("/piopiy/answer", json=body)
        assert response.status_code == 200
        (stream,) = response.json()
        assert stream["action"] == "stream" and stream["voice_quality"] == "8000"
        assert stream["listen_mode"] == "caller" and stream["stream_on_answer"] is True
        url = urlsplit(stream["ws_url"])
        assert url.scheme == "ws" and url.path == "/stream"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert (
            query["bot"] == "support_desk"
            and query["from"] == "919876543210"
            and query["to"] == SUPPORT_NUMBER
        )
        assert set(query) == {"call", "bot", "from", "to", "exp", "token"}
        # Same shape as the SDK-compatible builder.
        assert stream == stream_action(stream["ws_url"], voice_quality=8000)

        record = http.get(f"/api/calls/{query['call']}").json()
        assert record["status"] == "answered" and record["cmiuuid"] == body["cmiuuid"]
        (action,) = record["actions"]
        assert action["type"] == "answer" and action["reason"] == {
            "rule": "number_routing",
            "bot": "support_desk",
        }
        assert "token=redacted" in action["payload"][0]["ws_url"]  # no usable token in records


def test_record_action_goes_first_when_the_bot_asks(service: Service) -> None:
    with service.client() as http:
        pcmo = http.post("/piopiy/answer", json=answer_body(to="+" + ORDER_NUMBER)).json()
    assert [a["action"] for a in pcmo] == ["record", "stream"]
    assert pcmo[1]["voice_quality"] == "16000"


def test_unknown_number_gets_the_fallback_pcmo_and_a_record(service: Service) -> None:
    with service.client() as http:
        body = answer_body(to="911111111111")
        pcmo = http.post("/piopiy/answer", json=body).json()
        assert pcmo == [
            {
                "action": "speak",
                "text": "Sorry, this number is not in service. Connecting you to our front desk.",
            },
            {
                "action": "bridge",
                "from": 911111111111,
                "connect": [{"type": "pstn", "number": 918040009000}],
                "duration": 5400,
                "timeout": 40,
                "loop": 1,
            },
        ]
        calls = http.get("/api/calls", params={"status": "unrouted"}).json()["calls"]
        assert any(c["cmiuuid"] == body["cmiuuid"] for c in calls)


@pytest.mark.parametrize(
    ("content", "error", "detail"),
    [
        (b"{not json", "body is not valid JSON", ""),
        (b"[1, 2]", "malformed answer_url body", "expected a JSON object"),
        (json.dumps({"from": 1, "cmiuuid": "x"}).encode(), "malformed answer_url body", "to: Field required"),
        (json.dumps({"from": 1, "to": "", "cmiuuid": "x"}).encode(), "malformed answer_url body", "to:"),
        (b"[" * 100_000 + b"]" * 100_000, "body too large", "limit"),
        (b"\xff\xfe garbage", "body is not valid JSON", ""),
    ],
)
def test_malformed_answer_bodies_get_400_json(
    service: Service, content: bytes, error: str, detail: str
) -> None:
    with service.client() as http:
        response = http.post("/piopiy/answer", content=content, headers={"content-type": "application/json"})
    assert response.status_code in (400, 413)
    assert response.json()["error"] == error and detail in response.json()["detail"]


def test_json_bomb_within_the_size_limit_is_a_400_not_a_500(service: Service) -> None:
    with service.client() as http:
        response = http.post("/piopiy/answer", content=b"[" * 30_000 + b"]" * 30_000)
    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/piopiy/answer", "/piopiy/events", "/piopiy/cdr", "/piopiy/dtmf"])
def test_webhooks_need_the_webhook_secret(service: Service, path: str) -> None:
    for headers in ({}, {"X-Hotline-Secret": "wrong"}, service.api_headers):
        response = httpx.post(service.url + path, json=answer_body(), headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_the_api_needs_an_api_key(service: Service) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, service.webhook_headers):
        response = httpx.get(service.url + "/api/calls", headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_secret_accepted_as_query_or_bearer(service: Service) -> None:
    secret = service.webhook_headers["X-Hotline-Secret"]
    body = {"cmiuuid": "not-ours", "status": "ringing"}
    assert httpx.post(f"{service.url}/piopiy/events?secret={secret}", json=body).status_code == 200
    bearer = {"Authorization": f"Bearer {secret}"}
    assert httpx.post(f"{service.url}/piopiy/events", json=body, headers=bearer).status_code == 200


def test_api_key_accepted_as_bearer_or_its_header(service: Service) -> None:
    key = service.api_headers["Authorization"].removeprefix("Bearer ")
    assert httpx.get(f"{service.url}/api/calls", headers=service.api_headers).status_code == 200
    assert httpx.get(f"{service.url}/api/calls", headers={"X-Hotline-Api-Key": key}).status_code == 200
    assert httpx.get(f"{service.url}/api/calls?secret={key}").status_code == 401  # never in a URL


def test_events_and_cdrs_join_the_call(service: Service) -> None:
    with service.client() as http:
        body = answer_body()
        call_id = parse_qs(urlsplit(http.post("/piopiy/answer", json=body).json()[0]["ws_url"]).query)[
            "call"
        ][0]
        cmiuuid = body["cmiuuid"]
        event = {
            "cmiuuid": cmiuuid,
            "status": "STREAM_DISCONNECTED",
            "leg": "a",
            "from": 919876543210,
            "ws_status": json.dumps({"status": "disconnected", "message": {"code": 1006, "reason": "x"}}),
        }
        assert http.post("/piopiy/events", json=event).json() == {
            "ok": True,
            "call_id": call_id,
            "duplicate": False,
        }
        cdr = {"type": "cdr", "status": "answered", "cmiuuid": cmiuuid, "leg": "a", "duration": 42}
        assert http.post("/piopiy/cdr", json=cdr).json() == {"ok": True, "duplicate": False, "newest": True}
        retried = http.post("/piopiy/cdr", json=cdr).json()  # PIOPIY retries
        assert retried == {"ok": True, "duplicate": True, "newest": True}  # no time: the latest
        record = http.get(f"/api/calls/{call_id}").json()
        assert [e["status"] for e in record["events"]] == ["STREAM_DISCONNECTED"]
        assert record["events"][0]["payload"]["from"] == 919876543210
        assert [(c["leg"], c["deliveries"], c["duration"]) for c in record["cdr"]] == [("a", 2, 42)]


def test_events_for_unknown_calls_are_kept(service: Service) -> None:
    with service.client() as http:
        # A cmiuuid of its own: the same delivery posted by an earlier test would be a duplicate.
        body = {"cmiuuid": f"not-ours-{uuid.uuid4()}", "status": "ringing"}
        response = http.post("/piopiy/events", json=body)
        assert response.json() == {"ok": True, "call_id": None, "duplicate": False}
        assert http.post("/piopiy/events", json={"cmiuuid": "x"}).status_code == 400  # no status


def test_dtmf_without_a_live_call_is_stored_not_delivered(service: Service) -> None:
    with service.client() as http:
        response = http.post("/piopiy/dtmf", json={"from": 1, "to": 2, "dtmf": "12#", "cmuuid": "nobody"})
        assert response.json() == {"ok": True, "delivered": False}
        assert http.post("/piopiy/dtmf", json={"dtmf": "12; DROP"}).status_code == 400


def test_livez_answers_without_a_secret(service: Service) -> None:
    # Liveness for Kubernetes: unlike /healthz it stays 200 while draining (tests/agent/test_lifecycle.py).
    live = httpx.get(service.url + "/livez")
    assert live.status_code == 200 and live.json() == {"status": "alive"}


def test_healthz_and_missing_call(service: Service) -> None:
    health = httpx.get(service.url + "/healthz").json()
    assert health["status"] == "ok" and set(health["loop_lag_ms"]) == {"p50", "p99", "max"}
    assert health["model_queue_depth"] >= 0
    with service.client() as http:
        missing = http.get("/api/calls/c_" + "0" * 32)
        assert missing.status_code == 404 and missing.json()["error"] == "no such call"
        malformed = http.get("/api/calls/c_nope")
        assert malformed.status_code == 400 and malformed.json()["error"] == "malformed call id"
        bad = http.get("/api/calls", params={"limit": 0})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid request"
        assert "limit" in bad.json()["detail"]
