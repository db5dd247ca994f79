"""What the fuzzers found, one plain test each, so the fixes stay without the fuzzers' luck."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from agent.config.bot import HttpTool, Intent
from agent.config.yamlfile import ConfigError, load_yaml
from agent.escalation.conditions import ConditionError, parse
from agent.security import StreamTokens, TokenError
from agent.telephony.piopiy.codec import StreamDecoder, UnknownText
from agent.telephony.piopiy.webhooks import CdrRecord, PiopiyFormatError, parse_body
from tests.agent.conftest import Service
from tests.fuzz.test_fuzz_stream import HostileCaller


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: &x [1, *x]\n", "alias *x is inside its own anchor"),  # was a RecursionError
        ("a: !!int ''\n", "YAML error: a value cannot be read (IndexError"),  # PyYAML's own IndexError
        ("a: " + "[" * 100_000, "nested deeper than 64 levels"),  # was a segfault of the C parser
        # Deeper than ours, shallower than PyYAML's own limit (1,000 since 6.0.3): our check, in both styles.
        ("a: " + "[" * 65 + "]" * 65, "nested deeper than 64 levels"),
        ("".join(f"{' ' * i}k{i}:\n" for i in range(70)) + " " * 70 + "x\n", "nested deeper than 64 levels"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n"
                for p, c in zip("abcdefgh", "bcdefghi", strict=True)
            )
            + "z: *i\n",
            "more than 200000 values once aliases are expanded",  # an alias bomb: hours of validation
        ),
    ],
)
def test_yaml_that_broke_loading_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_deeply_nested_condition_is_a_condition_error() -> None:
    with pytest.raises(ConditionError, match="nested"):
        parse("not " * 5000 + "turns")
    with pytest.raises(ConditionError, match="nested"):
        parse("(" * 5000 + "turns" + ")" * 5000)
    parse("not " * 10 + "(turns > 2)")


@pytest.mark.parametrize("pattern", ["a{4294967296}", "(" * 2000 + ")" * 2000])
def test_regexes_python_cannot_compile_are_validation_errors(pattern: str) -> None:
    with pytest.raises(ValidationError, match="bad regular expression"):
        Intent(name="x", patterns=[pattern])
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}}
    with pytest.raises(ValidationError, match="not a valid JSON schema"):
        HttpTool(name="t", description="d", url="http://x", result="r", parameters=schema)


@pytest.mark.parametrize(
    "content",
    [
        b'{"from": "1", "to": "2", "cmiuuid": "\\ud800"}',  # was a 500: no column stores a lone surrogate
        b'{"from": NaN, "to": "2", "cmiuuid": "x"}',
        b'{"from": 1e999, "to": "2", "cmiuuid": "x"}',
        b'{"from": "1", "to": "2", "cmiuuid": "' + b"x" * 129 + b'"}',  # a 500 on PostgreSQL's varchar(128)
        b'{"from": "1", "to": "2", "cmiuuid": "a\\u0000b"}',  # a 500 on PostgreSQL: NUL in text
        b'{"from": "1", "to": "2", "cmiuuid": "x", "deep": ' + b"[" * 40 + b"]" * 40 + b"}",  # record: a 500
    ],
)
def test_webhook_bodies_the_store_cannot_keep_are_400(fuzz_service: Service, content: bytes) -> None:
    with fuzz_service.client() as http:
        response = http.post("/piopiy/answer", content=content)
    assert response.status_code == 400 and response.json()["error"] in (
        "body is not valid JSON",
        "malformed answer_url body",
    )


def test_framework_errors_have_our_json_shape(fuzz_service: Service) -> None:
    with fuzz_service.client() as http:
        assert http.get("/api/calls", params={"offset": 2**63}).status_code == 422  # was an OverflowError
        missing = http.get("/no/such/route")
        assert missing.status_code == 404 and missing.json() == {"error": "not found", "detail": "Not Found"}
        bad = http.post("/api/calls/c_x/hangup", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 422 and bad.json()["error"] == "invalid request"


def test_metadata_with_a_lone_surrogate_is_junk_text() -> None:
    # It used to become the call's cmiuuid and make GET /api/calls/{id} fail to serialize (a 500).
    assert isinstance(StreamDecoder().feed_text('{"cmiuuid": "\\ud800"}'), UnknownText)
    assert StreamDecoder().feed_text('{"cmiuuid": "' + "x" * 200 + '"}').call_uuid is None  # over 128
    # Stored as a metadata event, 40 levels made the call record fail to serialize.
    assert isinstance(StreamDecoder().feed_text('{"a": ' * 40 + "1" + "}" * 40), UnknownText)


def test_huge_frame_then_hangup_is_frame_too_large_not_a_stream_error(fuzz_service: Service) -> None:
    # The peer gone before our 1009 close used to log a traceback and record `stream_error`.
    with fuzz_service.client() as http:
        caller = HostileCaller(fuzz_service, http)
        caller.run([("huge", (300_000, False))], "close_1000")
        record = caller.record()
    assert record["end_reason"] == "frame_too_large" and record["status"] == "completed"


def test_text_that_is_not_utf8_closes_with_1007_quietly(fuzz_service: Service) -> None:
    # uvicorn logged tracebacks for it (and asyncio a fatal error when a close frame came with it).
    with fuzz_service.client() as http:
        caller = HostileCaller(fuzz_service, http)
        with connect(caller.ws_url, proxy=None) as ws:
            ws.send(b"\xff\xfe", text=True)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    ws.recv(timeout=10)  # the greeting's audio, then the close
        assert info.value.rcvd is not None and info.value.rcvd.code == 1007
        assert caller.record()["end_reason"] == "socket_closed_1007"
        assert http.get("/healthz").status_code == 200


def test_a_handshake_with_a_huge_url_is_answered_414(fuzz_service: Service) -> None:
    # websockets queued the 414 but uvicorn never sent it: the socket hung until the client gave up.
    url = fuzz_service.url.replace("http", "ws", 1) + "/stream?call=" + "9" * 9000
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=10, proxy=None)
    assert info.value.response.status_code == 414


def test_a_stream_token_with_non_ascii_characters_is_refused_not_a_crash() -> None:
    # hmac.compare_digest raised TypeError on such a str: a traceback for any client, no 1008.
    tokens = StreamTokens(b"0123456789abcdef0123456789abcdef", ttl_s=60)
    exp, _ = tokens.issue("c_1", "support_desk")
    with pytest.raises(TokenError, match="bad signature"):
        tokens.verify("c_1", "support_desk", exp, "tökén\ud800")


def test_a_cdr_request_id_with_a_nul_is_a_malformed_cdr() -> None:
    """Looked up in the store since CDRs close never-streamed calls: PostgreSQL raised on the NUL (a 500)."""
    body = {"cmiuuid": "u-1", "leg": "a", "request_id": "r\x00"}
    with pytest.raises(PiopiyFormatError, match="request_id"):
        parse_body(CdrRecord, body)
    assert parse_body(CdrRecord, {**body, "request_id": "r-1"}).request_id == "r-1"
