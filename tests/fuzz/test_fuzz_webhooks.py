"""PIOPIY's webhooks (answer_url, events, CDRs, DTMF) with any body: a 2xx, or a 4xx with a JSON error.

Run against the service on SQLite and on PostgreSQL: PostgreSQL refuses what SQLite lets through (NUL
characters, values longer than their column), so a body that is fine on one can be a 500 on the other.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.agent.conftest import ORDER_NUMBER, SUPPORT_NUMBER, WEBHOOK_SECRET, Service
from tests.fuzz.conftest import Surface, cases
from tests.fuzz.strategies import content_types, json_values, nasty_text, phone_like, raw_bodies

uuids = st.uuids().map(str)
cmiuuids = st.one_of(uuids, uuids, nasty_text)
numbers = st.one_of(st.sampled_from([SUPPORT_NUMBER, ORDER_NUMBER, "+91 80 4000 1000"]), phone_like)

SHAPES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "/piopiy/answer": st.fixed_dictionaries(
        {"from": phone_like, "to": numbers, "cmiuuid": cmiuuids},
        optional={"time": st.integers(), "action": st.just("inbound")},
    ),
    "/piopiy/events": st.fixed_dictionaries(
        {"cmiuuid": cmiuuids, "status": nasty_text},
        optional={
            "leg": st.sampled_from(["a", "b"]),
            "from": phone_like,
            "to": phone_like,
            "direction": st.sampled_from(["inbound", "outbound"]),
            "time": st.integers(),
            "request_id": nasty_text,
            "extra_params": json_values,
            "ws_status": st.one_of(nasty_text, json_values.map(json.dumps)),
        },
    ),
    "/piopiy/cdr": st.fixed_dictionaries(
        {"type": st.just("cdr"), "cmiuuid": cmiuuids, "leg": st.sampled_from(["a", "b", ""])},
        optional={
            "status": st.sampled_from(["answered", "missed"]),
            "duration": st.one_of(st.integers(), st.floats(allow_nan=False), nasty_text),
            "from": phone_like,
            "to": phone_like,
            "request_id": nasty_text,
            "call_rate": nasty_text,
        },
    ),
    "/piopiy/dtmf": st.fixed_dictionaries(
        {"dtmf": st.one_of(st.from_regex(r"[0-9*#]{1,8}", fullmatch=True), st.integers(), nasty_text)},
        optional={"cmiuuid": cmiuuids, "cmuuid": cmiuuids, "from": phone_like, "to": phone_like},
    ),
}
AUTH = ["header", "header", "header", "header", "query", "bearer", "none", "wrong"]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Iterator[httpx.Client]:
    service: Service = request.getfixturevalue(
        "fuzz_service" if request.param == "sqlite" else "fuzz_service_pg"
    )
    with httpx.Client(base_url=service.url, timeout=30) as client:
        yield client


def post(client: httpx.Client, path: str, body: bytes, content_type: str | None, auth: str) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    params = {}
    if auth == "header":
        headers["X-Hotline-Secret"] = WEBHOOK_SECRET
    elif auth == "query":
        params["secret"] = WEBHOOK_SECRET
    elif auth == "bearer":
        headers["Authorization"] = f"Bearer {WEBHOOK_SECRET}"
    elif auth == "wrong":
        headers["X-Hotline-Secret"] = "wrong-" + uuid.uuid4().hex
    return client.post(path, content=body, headers=headers, params=params)


def check_answer(path: str, response: httpx.Response, auth: str) -> None:
    """Never a 5xx; errors are JSON naming the problem; answer_url's 200 is a PCMO."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    if auth in ("none", "wrong"):
        assert response.status_code == 401 and body["error"] == "unauthorized"
        return
    if response.status_code >= 400:
        assert response.status_code in (400, 413, 422), response.text[:500]
        assert isinstance(body["error"], str) and body["error"] and isinstance(body["detail"], str)
        return
    assert response.status_code == 200
    if path == "/piopiy/answer":
        assert isinstance(body, list) and body and all(isinstance(a.get("action"), str) for a in body)
    else:
        assert body["ok"] is True


@pytest.mark.parametrize("path", list(SHAPES), ids=["answer_url", "events", "cdr", "dtmf"])
@pytest.mark.surface("webhook")
def test_webhook_bodies(backend: httpx.Client, path: str, surface: Surface) -> None:
    @cases(ci=150)
    @given(body=raw_bodies(SHAPES[path]), content_type=content_types, auth=st.sampled_from(AUTH))
    def one(body: bytes, content_type: str | None, auth: str) -> None:
        surface()
        check_answer(path, post(backend, path, body, content_type, auth), auth)

    one()
    assert backend.get("/healthz").status_code == 200
