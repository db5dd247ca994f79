"""What PIOPIY's webhooks do to a call's record, on SQLite and on PostgreSQL.

- A call that never streams is closed by PIOPIY's `hangup` event or its CDR (`abandoned`), and its
  ws_url can no longer open it; a retried answer_url (the same cmiuuid) gets the same answer and the
  same call, however many arrive at once.
- Numbers are digit strings or unknown, whatever PIOPIY sends; the ws_url's numbers are signed.
- An event delivered again is stored (and acted on) once; a late retry of an older CDR never replaces
  a newer one.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from agent.config.base import normalize_number
from agent.telephony.piopiy.webhooks import AnswerRequest, CallEvent, CdrRecord, cdr_is_newer, parse_body
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.records.test_store import PG_DSN, _postgres_available
from tests.agent.test_calls import call_id_of
from tests.agent.test_stream_replay import replay

UNKNOWN_NUMBER = "918049999999"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def edge(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    directory = tmp_path_factory.mktemp(f"edge-{request.param}")
    if request.param == "sqlite":
        with running_service(directory) as service:
            yield service
        return
    if not _postgres_available():
        pytest.fail("PostgreSQL at 127.0.0.1:5432 is required")
    schema = f"hotline_edge_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    storage = {"url": f"{PG_DSN}?options=-csearch_path%3D{schema}", "data_dir": str(directory),
               "recordings_dir": str(directory / "recordings")}  # fmt: skip
    try:
        with running_service(directory, storage=storage) as service:
            yield service
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
async def http(edge: Service) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url, headers=edge.headers, timeout=30) as client:
        yield client


def answer(cmiuuid: str, to: str = SUPPORT_NUMBER, caller: Any = "919876543210") -> dict[str, Any]:
    return {"from": caller, "to": to, "time": int(time.time() * 1000), "cmiuuid": cmiuuid}


def event(cmiuuid: str, status: str, at_ms: int, **more: Any) -> dict[str, Any]:
    return {"cmiuuid": cmiuuid, "status": status, "leg": "a", "direction": "inbound", "time": at_ms,
            "from": 919876543210, "to": int(SUPPORT_NUMBER), **more}  # fmt: skip


def ws_url_of(pcmo: list[dict[str, Any]]) -> str:
    return str(next(a for a in pcmo if a["action"] == "stream")["ws_url"])


async def calls_total(http: httpx.AsyncClient, outcome: str) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(rf'hotline_calls_total\{{bot="support_desk",outcome="{outcome}"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


# ------------------------------------------------------------------------------- calls never streamed


async def test_a_hangup_before_the_stream_abandons_the_call_once(http: httpx.AsyncClient) -> None:
    cmiuuid = str(uuid.uuid4())
    pcmo = (await http.post("/piopiy/answer", json=answer(cmiuuid))).json()
    call_id = call_id_of(pcmo)
    counted = await calls_total(http, "abandoned")
    hangup = event(cmiuuid, "hangup", int(time.time() * 1000))
    assert (await http.post("/piopiy/events", json=hangup)).json()["duplicate"] is False
    assert (await http.post("/piopiy/events", json=hangup)).json()["duplicate"] is True  # PIOPIY retried
    record = (await http.get(f"/api/calls/{call_id}")).json()
    assert record["status"] == "abandoned" and record["end_reason"] == "hangup_before_stream"
    assert record["ended_at"] is not None and record["connected_at"] is None
    assert [e["status"] for e in record["events"]] == ["hangup"]
    assert await calls_total(http, "abandoned") == counted + 1
    assert await replay(ws_url_of(pcmo)) == 1008  # over: its stream can no longer open it
    assert (await http.get(f"/api/calls/{call_id}")).json() == record


async def test_a_cdr_before_the_stream_abandons_the_call(http: httpx.AsyncClient) -> None:
    cmiuuid = str(uuid.uuid4())
    call_id = call_id_of((await http.post("/piopiy/answer", json=answer(cmiuuid))).json())
    cdr = {"type": "cdr", "cmiuuid": cmiuuid, "leg": "a", "status": "missed", "time": int(time.time() * 1000)}
    assert (await http.post("/piopiy/cdr", json=cdr)).json() == {
        "ok": True,
        "duplicate": False,
        "newest": True,
    }
    record = (await http.get(f"/api/calls/{call_id}")).json()
    assert record["status"] == "abandoned" and record["end_reason"] == "cdr_before_stream"
    assert [c["status"] for c in record["cdr"]] == ["missed"]


async def test_a_retried_answer_url_gets_the_same_answer_and_the_same_call(
    edge: Service, http: httpx.AsyncClient
) -> None:
    cmiuuid = str(uuid.uuid4())
    first = (await http.post("/piopiy/answer", json=answer(cmiuuid))).json()
    retries = await asyncio.gather(*(http.post("/piopiy/answer", json=answer(cmiuuid)) for _ in range(4)))
    assert [r.json() for r in retries] == [first] * 4  # the same ws_url: same call, token and expiry
    call_id = call_id_of(first)
    record = (await http.get(f"/api/calls/{call_id}")).json()
    assert [a["type"] for a in record["actions"]] == ["answer"]
    assert [e["status"] for e in record["events"]] == ["answer_retry"] * 4
    listed = (await http.get("/api/calls", params={"limit": 500})).json()["calls"]
    assert [c["call_id"] for c in listed if c["cmiuuid"] == cmiuuid] == [call_id]
    # Racing retries of a new call: still one row, one answer.
    fresh = str(uuid.uuid4())
    racing = await asyncio.gather(*(http.post("/piopiy/answer", json=answer(fresh)) for _ in range(5)))
    assert len({ws_url_of(r.json()) for r in racing}) == 1
    listed = (await http.get("/api/calls", params={"limit": 500})).json()["calls"]
    assert len([c for c in listed if c["cmiuuid"] == fresh]) == 1
    # The retried call streams as usual (the simulator answers again, then opens the same ws_url).
    sim = PiopiySimulator(edge.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER, cmiuuid=cmiuuid) as call:
        assert call.ws_url == ws_url_of(first)
        await call.wait_for_bot_audio(timeout=20)
    # An unknown number's fallback, retried: the same PCMO, one `unrouted` row.
    unrouted = str(uuid.uuid4())
    fallback = [
        (await http.post("/piopiy/answer", json=answer(unrouted, UNKNOWN_NUMBER))).json() for _ in range(2)
    ]
    assert fallback[0] == fallback[1] and all(a["action"] != "stream" for a in fallback[0])
    rows = (await http.get("/api/calls", params={"status": "unrouted", "limit": 500})).json()["calls"]
    assert len([c for c in rows if c["cmiuuid"] == unrouted]) == 1


# ------------------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(919876543210, "919876543210"), ("+91 98765-43210", "919876543210"), ("..", None), ("anonymous", None),
     ("", None), ("9²²²²", None), (-919876543210, None), (True, None)],
)  # fmt: skip
def test_numbers_become_digits_or_unknown(sent: Any, stored: str | None) -> None:
    body = {"from": sent, "to": SUPPORT_NUMBER, "cmiuuid": "u"}
    assert parse_body(AnswerRequest, body).from_ == stored
    assert parse_body(CallEvent, {**body, "status": "hangup"}).from_ == stored
    assert parse_body(CdrRecord, {**body, "to": sent}).to == stored


def test_the_dialled_number_must_be_one() -> None:
    for junk in ("..", "", "+", "abc"):
        with pytest.raises(Exception, match="to: Value error, not a phone number"):
            parse_body(AnswerRequest, {"from": "919876543210", "to": junk, "cmiuuid": "u"})
    with pytest.raises(ValueError):
        normalize_number("91²²²²²²")


async def test_an_unknown_caller_reaches_the_bot_as_unknown_and_the_ws_url_numbers_are_signed(
    edge: Service, http: httpx.AsyncClient
) -> None:
    """A caller number of `..` once became the tool path `/accounts/../balance`: it is unknown now,
    in the record, the ws_url and the live call; and a ws_url whose numbers were changed is refused."""
    pcmo = (
        await http.post("/piopiy/answer", json=answer(str(uuid.uuid4()), caller="+91 98765-43210"))
    ).json()
    ws_url = ws_url_of(pcmo)
    assert "from=919876543210&to=918040001000" in ws_url
    edits = [
        ("from=919876543210", "from=911111111111"),
        ("from=919876543210", "from=.."),
        ("to=9180", "to=1"),
    ]
    for old, new in edits:
        assert await replay(ws_url.replace(old, new)) == 1008
    record = (await http.get(f"/api/calls/{call_id_of(pcmo)}")).json()
    assert (record["from"], record["status"]) == ("919876543210", "answered")  # opened nothing

    sim = PiopiySimulator(edge.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER, from_number="..") as call:
        assert "from=&" in call.ws_url
        await call.wait_for_bot_audio(timeout=20)
        live = (await http.get("/api/live-calls")).json()["calls"]
        assert [c["caller"] for c in live if c["call_id"] == call_id_of(call.pcmo)] == [""]
    record = (await http.get(f"/api/calls/{call_id_of(call.pcmo)}")).json()
    assert record["from"] is None and record["meta"]["answer"]["from"] == ".."  # as received, kept


# ----------------------------------------------------------------------------- deliveries and order


async def test_an_event_delivered_again_is_stored_once(http: httpx.AsyncClient) -> None:
    cmiuuid = str(uuid.uuid4())
    call_id = call_id_of((await http.post("/piopiy/answer", json=answer(cmiuuid))).json())
    at = int(time.time() * 1000)
    ringing = event(cmiuuid, "ringing", at)
    answers = [(await http.post("/piopiy/events", json=ringing)).json()["duplicate"] for _ in range(3)]
    assert answers == [False, True, True]
    # The same delivery with its keys in another order, or its status in another case: still a retry.
    reordered = dict(reversed(list({**ringing, "status": "RINGING"}.items())))
    assert (await http.post("/piopiy/events", json=reordered)).json()["duplicate"] is True
    assert (await http.post("/piopiy/events", json=event(cmiuuid, "ringing", at + 1))).json()[
        "duplicate"
    ] is False
    timeless = {"cmiuuid": cmiuuid, "status": "in_answered"}
    assert [(await http.post("/piopiy/events", json=timeless)).json()["duplicate"] for _ in range(2)] == [
        False,
        True,
    ]
    record = (await http.get(f"/api/calls/{call_id}")).json()
    assert [e["status"] for e in record["events"]] == ["ringing", "ringing", "in_answered"]


async def test_a_late_retry_of_an_older_cdr_never_replaces_a_newer_one(http: httpx.AsyncClient) -> None:
    cmiuuid = str(uuid.uuid4())
    call_id = call_id_of((await http.post("/piopiy/answer", json=answer(cmiuuid))).json())
    t0 = int(time.time() * 1000)
    older = {"type": "cdr", "cmiuuid": cmiuuid, "leg": "a", "status": "missed", "duration": 0, "time": t0}
    newer = {**older, "status": "answered", "duration": 42, "time": t0 + 60_000}
    newest = {**newer, "duration": 43, "time": str(t0 + 120_000)}  # numbers may come as strings

    async def deliver(cdr: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = (await http.post("/piopiy/cdr", json=cdr)).json()
        return body

    assert await deliver(newer) == {"ok": True, "duplicate": False, "newest": True}
    assert await deliver(older) == {"ok": True, "duplicate": True, "newest": False}  # 15 minutes late
    assert await deliver(newer) == {"ok": True, "duplicate": True, "newest": False}  # a plain retry
    cdr = (await http.get(f"/api/calls/{call_id}")).json()["cdr"]
    assert [(c["status"], c["duration"], c["deliveries"]) for c in cdr] == [("answered", 42, 3)]
    assert await deliver(newest) == {"ok": True, "duplicate": True, "newest": True}
    assert await deliver(older) == {"ok": True, "duplicate": True, "newest": False}
    cdr = (await http.get(f"/api/calls/{call_id}")).json()["cdr"]
    assert [(c["duration"], c["deliveries"]) for c in cdr] == [(43, 5)]


def test_which_cdr_is_newer() -> None:
    assert cdr_is_newer({"time": 2}, {"time": 1}) and not cdr_is_newer({"time": 1}, {"time": 2})
    assert not cdr_is_newer({"time": 1}, {"time": 1})  # the same CDR again
    assert cdr_is_newer({"end_time": 1_700_000_100}, {"end_time": 1_700_000_000})  # seconds, no `time`
    assert cdr_is_newer({"time": 5}, {}) and not cdr_is_newer({}, {"time": 5})
    assert cdr_is_newer({}, {})  # neither says: the latest delivery
    assert not cdr_is_newer({"time": "soon"}, {"time": 5}) and not cdr_is_newer({"time": True}, {"time": 5})
    assert not cdr_is_newer({"time": float("nan")}, {"time": 5})
