"""PIOPIY's webhook bodies: numbers as ints or strings, missing fields named, event and CDR identity."""

from __future__ import annotations

from typing import Any

import pytest

from agent.telephony.piopiy.codec import PiopiyFormatError
from agent.telephony.piopiy.webhooks import (
    AnswerRequest,
    CallEvent,
    CdrRecord,
    DtmfCallback,
    parse_body,
)

PIOPIY_NUMBER = 918035000000


@pytest.mark.parametrize("number", [919876543210, "919876543210", "+919876543210"])
def test_answer_body_with_int_or_string_numbers(number: int | str) -> None:
    body = {"from": number, "to": PIOPIY_NUMBER, "time": 1732190000000, "cmiuuid": "c-1", "action": "inbound"}
    answer = parse_body(AnswerRequest, body)
    assert answer.from_ == "919876543210"  # digits, whatever PIOPIY sent
    assert answer.to == str(PIOPIY_NUMBER)
    assert answer.cmiuuid == "c-1"
    assert answer.action == "inbound"
    assert answer.time == 1732190000000


def test_answer_body_without_action_or_time() -> None:
    answer = parse_body(AnswerRequest, {"from": "9198", "to": "9180", "cmiuuid": "c-2"})
    assert (answer.action, answer.time) == (None, None)


@pytest.mark.parametrize("missing", ["from", "to", "cmiuuid"])
def test_answer_body_missing_a_field_names_it(missing: str) -> None:
    body = {"from": 9198, "to": 9180, "cmiuuid": "c-1"}
    del body[missing]
    with pytest.raises(PiopiyFormatError, match=rf"^{missing}: Field required"):
        parse_body(AnswerRequest, body)


@pytest.mark.parametrize("body", [None, [], "from=1", 42])
def test_non_object_bodies_are_format_errors(body: Any) -> None:
    with pytest.raises(PiopiyFormatError, match="JSON object"):
        parse_body(AnswerRequest, body)


def test_stream_events_decode_ws_status_json_strings() -> None:
    connected = parse_body(
        CallEvent, {"cmiuuid": "c-1", "status": "stream_connected", "ws_status": '{"status":"connected"}'}
    )
    assert connected.stream_status() == {"status": "connected"}
    dropped = parse_body(
        CallEvent,
        {
            "cmiuuid": "c-1",
            "status": "STREAM_DISCONNECTED",
            "leg": "a",
            "from": 919876543210,
            "ws_status": '{"status":"disconnected","message":{"code":1006,"reason":"abnormal"}}',
        },
    )
    assert dropped.status_lower == "stream_disconnected"
    assert dropped.from_ == "919876543210"
    assert dropped.stream_status() == {
        "status": "disconnected",
        "message": {"code": 1006, "reason": "abnormal"},
    }
    assert parse_body(CallEvent, {"status": "ringing", "ws_status": "weird"}).stream_status() == {
        "status": "weird"
    }
    assert parse_body(CallEvent, {"status": "ringing"}).stream_status() is None
    with pytest.raises(PiopiyFormatError, match="status"):
        parse_body(CallEvent, {"cmiuuid": "c-1"})


def test_cdr_retries_share_one_idempotency_key() -> None:
    cdr = {
        "type": "cdr",
        "status": "answered",
        "cmiuuid": "c-9",
        "leg": "a",
        "from": 919876543210,
        "to": "918035000000",
        "duration": "42",
        "balance": "12.50",
        "extra_params": "",
    }
    first, retry = parse_body(CdrRecord, cdr), parse_body(CdrRecord, dict(cdr))
    assert (first.cmiuuid, first.leg) == (retry.cmiuuid, retry.leg) == ("c-9", "a")
    assert first.duration == 42.0 and first.from_ == "919876543210"
    assert first.model_extra is not None and first.model_extra["balance"] == "12.50"  # unknown keys kept
    no_leg = parse_body(CdrRecord, {k: v for k, v in cdr.items() if k != "leg"})
    assert (no_leg.cmiuuid, no_leg.leg) == ("c-9", "a")
    b_leg = parse_body(CdrRecord, {**cdr, "leg": "b", "duration": ""})
    assert (b_leg.leg, b_leg.duration) == ("b", None)
    with pytest.raises(PiopiyFormatError, match="cmiuuid"):
        parse_body(CdrRecord, {"type": "cdr", "leg": "a"})


@pytest.mark.parametrize("key", ["cmiuuid", "cmuuid"])
def test_dtmf_with_either_call_id_spelling(key: str) -> None:
    dtmf = parse_body(DtmfCallback, {"from": 9198, "to": 9180, "dtmf": "12#", key: "c-7"})
    assert dtmf.call_uuid == "c-7"
    assert dtmf.dtmf == "12#"
    assert parse_body(DtmfCallback, {"dtmf": 5, key: "c-7"}).dtmf == "5"
    with pytest.raises(PiopiyFormatError, match="dtmf"):
        parse_body(DtmfCallback, {"dtmf": "12x", key: "c-7"})
