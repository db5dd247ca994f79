"""Stream frames: the codec alone at high volume, then whole calls fed hostile frame sequences.

A hostile call mixes junk bytes, odd-length frames, frames over the size limit, floods of 1-byte frames,
text that is not JSON, text that is not UTF-8, JSON bombs, DTMF and platform events for the call, and
ends with a close handshake or a dead socket. Whatever happens, the call is recorded (completed or
dropped, with its stream events), nothing is logged as an error, and the service stays healthy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from agent.telephony.piopiy.codec import (
    PiopiyFormatError,
    StreamDecoder,
    StreamMetadata,
    UnknownText,
    decode_outbound,
)
from tests.agent.conftest import SUPPORT_NUMBER, Service
from tests.fuzz.conftest import Surface, cases
from tests.fuzz.strategies import bomb, json_values, nasty_text, to_json

MAX_FRAME = 262_144  # security.max_frame_bytes of the shipped config.yaml

texts = st.one_of(
    st.text(max_size=300),
    nasty_text,
    json_values.map(json.dumps),
    st.uuids().map(lambda u: f"  {u}\n"),
    st.fixed_dictionaries(
        {}, optional={k: json_values for k in ("cmiuuid", "call_uuid", "uuid", "call_id")}
    ).map(json.dumps),
    st.builds(
        bomb, st.integers(min_value=1, max_value=120_000), st.sampled_from(["list", "dict", "open"])
    ).map(bytes.decode),
)


# ------------------------------------------------------------------------------------ the codec


@pytest.mark.surface("stream decoder (pure)")
def test_decoder_keeps_every_byte_and_classifies_every_text(surface: Surface) -> None:
    @cases(ci=1000, full=50_000)
    @given(frames=st.lists(st.one_of(st.binary(max_size=700), texts), max_size=20))
    def one(frames: list[bytes | str]) -> None:
        surface()
        decoder, fed, out = StreamDecoder(), b"", b""
        for frame in frames:
            if isinstance(frame, bytes):
                pcm = decoder.feed_bytes(frame)
                fed += frame
                out += pcm
                assert len(pcm) % 2 == 0 and decoder.pending in (0, 1)
            else:
                message = decoder.feed_text(frame)
                assert isinstance(message, (StreamMetadata, UnknownText))
                if isinstance(message, UnknownText):
                    assert len(message.text) <= 200
                else:
                    assert message.call_uuid is None or isinstance(message.call_uuid, str)
        assert out == fed[: len(out)] and len(fed) - len(out) == decoder.pending
        assert decoder.bytes_in == len(fed)

    one()


@pytest.mark.surface("outbound frame decoder (pure)")
def test_outbound_decoder_raises_only_its_format_error(surface: Surface) -> None:
    # The platform's side of the codec (simulator, tests): any text is a typed frame or PiopiyFormatError.
    audio = st.fixed_dictionaries(
        {},
        optional={
            "audioDataType": st.sampled_from(["raw", "wav", "mp3"]) | json_values,
            "sampleRate": st.sampled_from([8000, 16000]) | json_values,
            "audioData": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | json_values,
        },
    )
    frames = st.one_of(
        texts,
        st.fixed_dictionaries({"type": st.just("streamAudio"), "data": audio | json_values}).map(json.dumps),
        st.fixed_dictionaries({"action": json_values}).map(json.dumps),
        st.lists(st.fixed_dictionaries({"action": json_values}), max_size=3).map(json.dumps),
    )

    @cases(ci=1000, full=20_000)
    @given(text=frames)
    def one(text: str) -> None:
        surface()
        try:
            decode_outbound(text)
        except PiopiyFormatError:
            pass

    one()


# ------------------------------------------------------------------------------------ whole calls

# Frames a socket can carry as text (a lone surrogate has no UTF-8 form: the client could not send it).
sendable_texts = texts.filter(lambda s: _is_utf8(s.encode("utf-8", "surrogatepass")))

Step = tuple[str, Any]

steps: st.SearchStrategy[Step] = st.one_of(
    st.tuples(st.just("bytes"), st.binary(max_size=2000)),
    st.tuples(st.just("bytes"), st.binary(min_size=1, max_size=9).filter(lambda b: len(b) % 2 == 1)),
    st.tuples(st.just("flood"), st.integers(min_value=1, max_value=400)),
    st.tuples(
        st.just("huge"),
        st.tuples(
            st.one_of(
                st.integers(MAX_FRAME + 1, 1_500_000),
                st.integers(MAX_FRAME + 1, MAX_FRAME + 9),
                st.just(17 * 2**20),
            ),
            st.booleans(),
        ),
    ),
    st.tuples(st.just("text"), sendable_texts),
    st.tuples(st.just("invalid_utf8"), st.binary(min_size=1, max_size=40).filter(lambda b: not _is_utf8(b))),
    st.tuples(st.just("dtmf"), st.one_of(st.from_regex(r"[0-9*#]{1,6}", fullmatch=True), nasty_text)),
    st.tuples(
        st.just("event"),
        st.tuples(
            st.sampled_from(["hangup", "HANGUP", "out_answered", "ringing", "STREAM_DISCONNECTED", "x"]),
            st.sampled_from(["a", "b"]),
        ),
    ),
    st.tuples(st.just("ping"), st.binary(max_size=100)),
    st.tuples(st.just("wait"), st.integers(min_value=0, max_value=40)),
)
endings = st.sampled_from(["close_1000", "close_1000", "close_1001", "close_4000", "abort"])


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class HostileCaller:
    """Places one call and plays a hostile step list on its socket; `call_id` is the call's record."""

    def __init__(self, service: Service, http: httpx.Client) -> None:
        self.service, self.http = service, http
        self.cmiuuid = str(uuid.uuid4())
        body = {"from": "919876543210", "to": SUPPORT_NUMBER, "cmiuuid": self.cmiuuid}
        pcmo = http.post("/piopiy/answer", json=body).json()
        self.ws_url: str = pcmo[-1]["ws_url"]
        self.call_id = parse_qs(urlsplit(self.ws_url).query)["call"][0]
        self.closed_by_server = False

    def play(self, ws: ClientConnection, step: Step) -> None:
        kind, arg = step
        if kind == "bytes":
            ws.send(arg)
        elif kind == "flood":
            for _ in range(arg):
                ws.send(b"\x01")
        elif kind == "huge":
            size, as_text = arg
            ws.send("a" * size if as_text else bytes(size))
        elif kind == "text":
            ws.send(arg)
        elif kind == "invalid_utf8":
            ws.send(arg, text=True)
        elif kind == "dtmf":
            body = {"from": "919876543210", "to": SUPPORT_NUMBER, "dtmf": arg, "cmiuuid": self.cmiuuid}
            assert self.http.post("/piopiy/dtmf", content=to_json(body)).status_code in (200, 400)
        elif kind == "event":
            status, leg = arg
            body = {"cmiuuid": self.cmiuuid, "status": status, "leg": leg, "from": 919876543210}
            assert self.http.post("/piopiy/events", json=body).status_code == 200
        elif kind == "ping":
            ws.ping(arg + uuid.uuid4().bytes)  # the same payload twice in flight is the client's error
        elif kind == "wait":
            time.sleep(arg / 1000)

    def run(self, plan: list[Step], ending: str) -> None:
        with connect(
            self.ws_url, max_size=None, max_queue=None, open_timeout=20, close_timeout=5, proxy=None
        ) as ws:
            self.wait_until_streaming()
            try:
                for step in plan:
                    self.play(ws, step)
            except (ConnectionClosed, OSError):
                self.closed_by_server = True
                return
            if ending == "abort":  # the line dies: no close handshake
                with contextlib.suppress(OSError):  # unless the service closed it already
                    ws.socket.shutdown(socket.SHUT_RDWR)
            else:
                ws.close(int(ending.removeprefix("close_")))

    def wait_until_streaming(self, timeout_s: float = 30.0) -> None:
        """The service has claimed the call for this stream: PIOPIY sends a call's events after its
        stream is up. (A hang-up the service hears before the claim abandons the call and refuses the
        stream; tests/agent/telephony/piopiy/test_webhook_integrity.py covers that order.)"""
        deadline = time.monotonic() + timeout_s
        while self.http.get(f"/api/calls/{self.call_id}").json()["status"] == "answered":
            assert time.monotonic() < deadline, "the stream never claimed its call"
            time.sleep(0.01)

    def record(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """The call's record once the service has saved its end."""
        deadline = time.monotonic() + timeout_s
        while True:
            record: dict[str, Any] = self.http.get(f"/api/calls/{self.call_id}").json()
            if record["status"] in ("completed", "dropped") and not record["live"]:
                return record
            assert time.monotonic() < deadline, f"call not saved as ended: {record['status']}"
            time.sleep(0.01)


@pytest.mark.surface("stream: whole hostile calls")
def test_hostile_calls_are_recorded_and_the_service_stays_up(fuzz_service: Service, surface: Surface) -> None:
    with fuzz_service.client() as http:

        @cases(ci=120)
        @given(plan=st.lists(steps, max_size=10), ending=endings)
        def one(plan: list[Step], ending: str) -> None:
            surface()
            caller = HostileCaller(fuzz_service, http)
            caller.run(plan, ending)
            record = caller.record()
            stream_events = [e["status"] for e in record["events"] if e["source"] == "stream"]
            assert stream_events[0] == "connected" and stream_events[-1] == "closed", stream_events
            assert record["ended_at"] and record["end_reason"] != "stream_error", record["end_reason"]
            assert http.get("/healthz").status_code == 200

        one()
        health = http.get("/healthz").json()
        assert health["status"] == "ok" and health["active_calls"] == 0


@pytest.mark.surface("stream: sockets without a valid token")
def test_bad_tokens_open_no_call(fuzz_service: Service, surface: Surface) -> None:
    # Anyone can open the socket: junk sent before the token is checked must not matter either.
    with fuzz_service.client() as http:

        @cases(ci=100)
        @given(
            query=st.dictionaries(
                st.sampled_from(["call", "bot", "exp", "token", "from", "to"]),
                nasty_text.filter(lambda s: _is_utf8(s.encode("utf-8", "surrogatepass"))),
                max_size=6,
            ),
            first=st.one_of(st.none(), st.binary(max_size=64), sendable_texts),
            abort=st.booleans(),
        )
        def one(query: dict[str, str], first: bytes | str | None, abort: bool) -> None:
            surface()
            url = httpx.URL(fuzz_service.url.replace("http", "ws", 1) + "/stream", params=query)
            try:
                ws = connect(str(url), open_timeout=20, close_timeout=5, proxy=None)
            except InvalidStatus as refused:  # a URL over 8 KB: 414 before any WebSocket
                assert refused.response.status_code == 414 and len(str(url)) > 8000, refused
                return
            with ws:
                try:
                    if first is not None:
                        ws.send(first)
                    if abort:
                        with contextlib.suppress(OSError):
                            ws.socket.shutdown(socket.SHUT_RDWR)
                        return
                    ws.recv(timeout=10)
                except ConnectionClosed as closed:
                    assert closed.rcvd is None or closed.rcvd.code in (1007, 1008), closed.rcvd
                else:
                    raise AssertionError("a socket without a valid token stayed open")

        one()
        assert http.get("/healthz").json()["active_calls"] == 0
