"""`hotline call`: the make-call request PIOPIY receives, and what the store records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from agent.cli.main import main
from agent.config.settings import load_settings
from agent.records.store import Store
from agent.security import StreamTokens, resolve_secret
from testkit.fake_piopiy_rest import FakePiopiyRest
from tests.agent.conftest import write_config
from tests.conftest import PIOPIY_APPID, PIOPIY_SECRET


@pytest.fixture
def config(tmp_path: Path, fake_piopiy_rest: FakePiopiyRest, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PIOPIY_APPID", str(PIOPIY_APPID))
    monkeypatch.setenv("PIOPIY_SECRET", PIOPIY_SECRET)
    monkeypatch.delenv("HOTLINE_STREAM_SECRET", raising=False)  # generated into the data dir
    return write_config(
        tmp_path,
        piopiy={"rest_base_url": fake_piopiy_rest.base_url, "action_base_url": fake_piopiy_rest.base_url},
        server={"public_url": "https://hotline.example.com"},
    )


def record(config: Path, call_id: str) -> dict[str, object]:
    settings = load_settings(config)

    async def fetch() -> dict[str, object]:
        store = Store(settings.service.storage.url, base_dir=settings.base_dir)
        try:
            found = await store.call_record(call_id)
        finally:
            await store.close()
        assert found is not None
        return found

    return asyncio.run(fetch())


def test_outbound_call_posts_a_stream_pcmo_and_records_the_call(
    config: Path, fake_piopiy_rest: FakePiopiyRest, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--config", str(config), "call", "--to", "+91 98765 43210", "--bot", "support_desk"]
    assert main([*argv, "--then-transfer", "billing"]) == 0
    (request,) = fake_piopiy_rest.requests
    body = request.body
    assert request.path == "/v2/global_pcmo_make_call" and request.status_code == 200
    assert body["appid"] == PIOPIY_APPID and body["secret"] == PIOPIY_SECRET
    assert (body["from"], body["to"], body["duration"]) == (918040001000, 919876543210, 5400)
    stream, bridge = body["pcmo"]
    assert stream["action"] == "stream" and stream["voice_quality"] == "8000"
    url = urlsplit(stream["ws_url"])
    assert url.scheme == "wss" and url.netloc == "hotline.example.com"
    q = {k: v[0] for k, v in parse_qs(url.query).items()}
    # The token opens exactly this call for this bot and these numbers, signed with the service's secret.
    settings = load_settings(config)
    secret = resolve_secret("HOTLINE_STREAM_SECRET", settings.path(settings.service.storage.data_dir))
    assert (q["from"], q["to"]) == ("918040001000", "919876543210")
    StreamTokens(secret.encode(), 600).verify(
        q["call"], "support_desk", q["exp"], q["token"], q["from"], q["to"]
    )
    assert bridge == {
        "action": "bridge",
        "from": 918040001000,
        "connect": [{"type": "pstn", "number": 918040001101}, {"type": "pstn", "number": 918040001102}],
        "duration": 5400,
        "timeout": 30,
        "loop": 1,
        "ring_type": "group",
    }
    assert body["extra_params"] == {"call_id": q["call"], "bot": "support_desk"}

    out = capsys.readouterr().out
    assert q["call"] in out
    rec = record(config, q["call"])
    request_id = fake_piopiy_rest.requests[0].answer["request_id"]
    assert (rec["direction"], rec["status"], rec["request_id"]) == ("outbound", "dialing", request_id)


def test_rejected_credentials_are_reported_clearly(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PIOPIY_SECRET", "wrong")
    assert main(["--config", str(config), "call", "--to", "919876543210", "--bot", "order_line"]) == 1
    err = capsys.readouterr().err
    assert "PIOPIY rejected the appid/secret" in err and "wrong" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bot", "nobody"], "no bot named 'nobody'"),
        (["--bot", "order_line", "--then-transfer", "billing"], "has no department 'billing'"),
    ],
)
def test_bad_arguments(
    config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["--config", str(config), "call", "--to", "919876543210", *args]) == 1
    assert message in capsys.readouterr().err


def test_missing_credentials(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PIOPIY_APPID")
    assert main(["--config", str(config), "call", "--to", "919876543210", "--bot", "order_line"]) == 1
    assert "set PIOPIY_APPID" in capsys.readouterr().err
