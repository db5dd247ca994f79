"""PiopiyRestClient against the fake PIOPIY REST API over real HTTP, and the servers the fake runs on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from piopiy.voice import hold as sdk_hold
from piopiy.voice import pcmo_call as sdk_pcmo_call

from agent.telephony.piopiy.codec import (
    PiopiyFormatError,
    bridge_action,
    hangup_action,
    input_action,
    param_action,
    play_action,
    play_get_input_action,
    record_action,
    speak_action,
    stream_action,
)
from agent.telephony.piopiy.rest import (
    MakeCallResult,
    PiopiyAuthError,
    PiopiyRestClient,
    PiopiyRestError,
)
from testkit.fake_piopiy_rest import FakePiopiyRest
from testkit.servers import ServerStartupError, serve_in_task, serve_in_thread

# The fake_piopiy_rest fixture (tests/conftest.py) accepts exactly these credentials.
PIOPIY_APPID = 1111
PIOPIY_SECRET = "s3cret"
PIOPIY_NUMBER = 918035000000
CALLEE = 919876543210
WS_URL = "wss://hotline.example.com/stream?call=abc&token=t0k"


@contextlib.asynccontextmanager
async def client_for(
    fake: FakePiopiyRest, *, secret: str = PIOPIY_SECRET, **options: Any
) -> AsyncIterator[PiopiyRestClient]:
    assert (fake.appid, fake.secret) == (PIOPIY_APPID, PIOPIY_SECRET)
    async with PiopiyRestClient(
        appid=PIOPIY_APPID,
        secret=secret,
        base_url=fake.base_url,
        action_base_url=fake.base_url,
        **options,
    ) as client:
        yield client


def closed_port_url() -> str:
    """A 127.0.0.1 URL nobody listens on: bind a free port, then release it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------- make_call


async def test_make_call_sends_the_sdk_body_with_ints(fake_piopiy_rest: FakePiopiyRest) -> None:
    pcmo = [stream_action(WS_URL, listen_mode="caller", voice_quality=8000)]
    async with client_for(fake_piopiy_rest) as client:
        result = await client.make_call(
            to=CALLEE, from_number=str(PIOPIY_NUMBER), pcmo=pcmo, extra_params={"bot": "support"}
        )

    assert isinstance(result, MakeCallResult)
    assert result.status == "progress"
    assert result.request_id in fake_piopiy_rest.calls
    [request] = fake_piopiy_rest.requests
    assert request.path == "/v2/global_pcmo_make_call"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {
        "appid": PIOPIY_APPID,
        "secret": PIOPIY_SECRET,
        "from": PIOPIY_NUMBER,
        "to": CALLEE,
        "duration": 5400,
        "extra_params": {"bot": "support"},
        "pcmo": [
            {
                "action": "stream",
                "ws_url": WS_URL,
                "listen_mode": "caller",
                "voice_quality": "8000",
                "stream_on_answer": True,
            }
        ],
    }
    for key in ("appid", "from", "to", "duration"):
        assert type(request.body[key]) is int, key


async def test_make_call_body_equals_the_official_sdk_body(
    fake_piopiy_rest: FakePiopiyRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Point TeleCMI's own SDK at the fake and compare what both clients put on the wire.
    for name, path in (("glob_voice", "/v2/global_pcmo_make_call"), ("ind_voice", "/v2/ind_pcmo_make_call")):
        monkeypatch.setattr(sdk_pcmo_call, name, {"host": fake_piopiy_rest.base_url, "path": path})
    pcmo = [stream_action(WS_URL), bridge_action(PIOPIY_NUMBER, [CALLEE])]
    sdk = sdk_pcmo_call.PCMO(PIOPIY_APPID, PIOPIY_SECRET)
    sdk_answer = await asyncio.to_thread(
        sdk.makePCMO, CALLEE, PIOPIY_NUMBER, pcmo, {"duration": 600, "extra_params": {"k": "v"}}
    )
    # The SDK picks the India endpoint itself when the PIOPIY number looks like 91[6-9]xxxxxxxxx;
    # we take the region from config instead.
    async with client_for(fake_piopiy_rest, region="ind") as client:
        await client.make_call(
            to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=pcmo, duration=600, extra_params={"k": "v"}
        )

    assert sdk_answer["code"] == 200
    sdk_request, our_request = fake_piopiy_rest.requests
    assert our_request.path == sdk_request.path
    assert our_request.body == sdk_request.body


async def test_the_fake_accepts_every_builder(fake_piopiy_rest: FakePiopiyRest) -> None:
    dtmf_url = "https://hotline.example.com/piopiy/dtmf"
    pcmo = [
        param_action('{"bot":"support"}'),
        record_action(),
        speak_action("Hello"),
        play_action("https://cdn.example.com/a.mp3"),
        play_action("welcome.wav"),
        input_action(dtmf_url, max_digit=4),
        play_get_input_action(dtmf_url, "https://cdn.example.com/menu.mp3"),
        stream_action(WS_URL, listen_mode="both", voice_quality="16000", stream_on_answer=False),
        bridge_action(PIOPIY_NUMBER, [CALLEE, "+1 415 555 0123"], ring_type="group"),
        hangup_action(),
    ]
    async with client_for(fake_piopiy_rest) as client:
        result = await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=pcmo)
    assert fake_piopiy_rest.calls[result.request_id]["pcmo"] == pcmo


async def test_ind_region_uses_the_india_endpoint(fake_piopiy_rest: FakePiopiyRest) -> None:
    async with client_for(fake_piopiy_rest, region="ind") as client:
        await client.make_call(to="+91 98765 43210", from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])
    [request] = fake_piopiy_rest.requests
    assert request.path == "/v2/ind_pcmo_make_call"
    assert request.body["to"] == CALLEE


async def test_bad_secret_is_an_auth_error_that_names_the_settings(
    fake_piopiy_rest: FakePiopiyRest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with client_for(fake_piopiy_rest, secret="wrong-secret") as client:
        with pytest.raises(PiopiyAuthError) as caught:
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])
        assert "wrong-secret" not in repr(client)

    error = caught.value
    assert error.status_code == 420
    assert "PIOPIY rejected the appid/secret" in str(error)
    assert "check PIOPIY_APPID / PIOPIY_SECRET" in str(error)
    assert "Invalid appid or secret" in str(error)
    assert "wrong-secret" not in str(error) and "wrong-secret" not in caplog.text
    assert isinstance(error, PiopiyRestError)


async def test_code_420_in_a_200_body_is_an_auth_error_too(fake_piopiy_rest: FakePiopiyRest) -> None:
    fake_piopiy_rest.queue_answer(200, {"code": 420, "msg": "Invalid appid or secret"})
    async with client_for(fake_piopiy_rest) as client:
        with pytest.raises(PiopiyAuthError, match="420"):
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])


@pytest.mark.parametrize(
    ("pcmo", "property_name"),
    [
        # The SDK's stream without options: PIOPIY may take it, the fake requires what we always send.
        ([{"action": "stream", "ws_url": WS_URL}], "listen_mode"),
        (
            [{"action": "stream", "ws_url": "https://x", "listen_mode": "caller", "voice_quality": "8000"}],
            "ws_url",
        ),
        (
            [{"action": "bridge", "from": PIOPIY_NUMBER, "connect": [{"type": "pstn", "number": "9198"}]}],
            "number",
        ),
        ([{"action": "bridge", "from": PIOPIY_NUMBER, "connect": []}], "connect"),
        ([{"action": "teleport"}], "teleport"),
    ],
)
async def test_missing_or_bad_property_is_a_422(
    fake_piopiy_rest: FakePiopiyRest, pcmo: list[dict[str, Any]], property_name: str
) -> None:
    async with client_for(fake_piopiy_rest) as client:
        with pytest.raises(PiopiyRestError) as caught:
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=pcmo)
    assert not isinstance(caught.value, PiopiyAuthError)
    assert caught.value.status_code == 422
    assert "missing or invalid" in str(caught.value)
    assert property_name in str(caught.value)


async def test_server_errors_and_odd_answers_are_rest_errors(fake_piopiy_rest: FakePiopiyRest) -> None:
    fake_piopiy_rest.queue_answer(500, {"message": "upstream exploded"})
    fake_piopiy_rest.queue_answer(200, {"code": 200, "status": "progress"})
    async with client_for(fake_piopiy_rest) as client:
        with pytest.raises(PiopiyRestError, match=r"500: upstream exploded"):
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])
        with pytest.raises(PiopiyRestError, match="no request_id"):
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])


async def test_bad_arguments_fail_before_any_request(fake_piopiy_rest: FakePiopiyRest) -> None:
    async with client_for(fake_piopiy_rest) as client:
        with pytest.raises(PiopiyFormatError, match="pcmo"):
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[])
        with pytest.raises(PiopiyFormatError, match="to"):
            await client.make_call(to="call me", from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])
        with pytest.raises(PiopiyFormatError, match="cmiuuid"):
            await client.call_action(" ", "hangup")
        with pytest.raises(PiopiyFormatError, match="action"):
            await client.call_action("c-1", "explode")  # type: ignore[arg-type]
    assert fake_piopiy_rest.requests == []
    with pytest.raises(ValueError, match="PIOPIY_SECRET"):
        PiopiyRestClient(appid=PIOPIY_APPID, secret="")
    with pytest.raises(ValueError, match="PIOPIY_APPID"):
        PiopiyRestClient(appid="1111", secret=PIOPIY_SECRET)  # type: ignore[arg-type]


async def test_unreachable_server_is_a_rest_error() -> None:
    url = closed_port_url()
    async with PiopiyRestClient(appid=PIOPIY_APPID, secret=PIOPIY_SECRET, base_url=url) as client:
        with pytest.raises(PiopiyRestError, match="could not reach") as caught:
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])
    assert caught.value.status_code is None
    assert url in str(caught.value)
    assert PIOPIY_SECRET not in str(caught.value)
    assert caught.value.__cause__ is None  # the httpx error holds the request body, secret included


async def test_slow_server_is_a_timeout_rest_error(fake_piopiy_rest: FakePiopiyRest) -> None:
    fake_piopiy_rest.delay_s = 1.0
    async with client_for(fake_piopiy_rest, timeout_s=0.2) as client:
        with pytest.raises(PiopiyRestError, match=r"no answer .* within 0.2 s"):
            await client.make_call(to=CALLEE, from_number=PIOPIY_NUMBER, pcmo=[stream_action(WS_URL)])


# -------------------------------------------------------------------------------- call_action


async def test_call_action_hangup(fake_piopiy_rest: FakePiopiyRest, monkeypatch: pytest.MonkeyPatch) -> None:
    async with client_for(fake_piopiy_rest) as client:
        answer = await client.call_action("c0ffee-1", "hangup")
    assert answer["code"] == 200
    [request] = fake_piopiy_rest.requests
    assert request.path == "/v1/call/action"
    assert request.body == {
        "appid": PIOPIY_APPID,
        "secret": PIOPIY_SECRET,
        "cmiuuid": "c0ffee-1",
        "action": "hangup",
    }

    # Hold through the SDK and through us: same body.
    monkeypatch.setattr(sdk_hold, "host", fake_piopiy_rest.base_url + "/v1/call/action")
    await asyncio.to_thread(sdk_hold.Hold(PIOPIY_APPID, PIOPIY_SECRET).toggle, "c0ffee-1")
    async with client_for(fake_piopiy_rest) as client:
        await client.call_action("c0ffee-1", "holdToggle")
    _, sdk_request, our_request = fake_piopiy_rest.requests
    assert our_request.body == sdk_request.body


async def test_call_action_accepts_a_non_json_answer(fake_piopiy_rest: FakePiopiyRest) -> None:
    fake_piopiy_rest.queue_answer(200, "ok")
    async with client_for(fake_piopiy_rest) as client:
        assert await client.call_action("c-1", "hold") == {"raw": '"ok"'}
    async with PiopiyRestClient(
        appid=2222, secret=PIOPIY_SECRET, action_base_url=fake_piopiy_rest.base_url
    ) as stranger:
        with pytest.raises(PiopiyAuthError):
            await stranger.call_action("c-1", "hold")


# ------------------------------------------------------------------------------------ servers


def _status_app() -> FastAPI:
    app = FastAPI()

    @app.get("/status")
    async def status() -> dict[str, str]:
        return {"status": "up"}

    return app


def _failing_app() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("database unreachable")
        yield

    return FastAPI(lifespan=lifespan)


def test_serve_in_thread_serves_then_stops_without_leaking_threads() -> None:
    before = set(threading.enumerate())
    with serve_in_thread(_status_app()) as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "/status").json() == {"status": "up"}
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("uvicorn")]
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/status")


def test_serve_in_thread_reports_why_startup_failed() -> None:
    with pytest.raises(ServerStartupError, match="startup failed: RuntimeError: database unreachable"):
        with serve_in_thread(_failing_app()):
            pytest.fail("the body must not run")


async def test_serve_in_task_serves_then_stops() -> None:
    async with serve_in_task(_status_app()) as url:
        async with httpx.AsyncClient() as http:
            assert (await http.get(url + "/status")).json() == {"status": "up"}
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url + "/status")
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("uvicorn")] == []


async def test_serve_in_task_reports_why_startup_failed() -> None:
    with pytest.raises(ServerStartupError, match="database unreachable"):
        async with serve_in_task(_failing_app()):
            pytest.fail("the body must not run")


def _hanging_app() -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.Event().wait()  # a startup that never finishes
        yield

    return FastAPI(lifespan=lifespan)


def test_serve_in_thread_gives_up_on_a_hanging_startup_and_ends_its_thread() -> None:
    before = set(threading.enumerate())
    with pytest.raises(ServerStartupError, match=r"not listening after 0.3 s"):
        with serve_in_thread(_hanging_app(), startup_timeout_s=0.3):
            pytest.fail("the body must not run")
    assert not [t for t in set(threading.enumerate()) - before if t.name.startswith("uvicorn")]


async def test_serve_in_task_gives_up_on_a_hanging_startup() -> None:
    with pytest.raises(ServerStartupError, match=r"not listening after 0.3 s"):
        async with serve_in_task(_hanging_app(), startup_timeout_s=0.3):
            pytest.fail("the body must not run")
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("uvicorn")] == []
