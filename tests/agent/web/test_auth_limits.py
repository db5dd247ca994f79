"""Who may knock, and how often: PIOPIY's surfaces only from its addresses (`security.platform_ips`),
and an address that sends wrong secrets or stream tokens too often is refused for a while, whatever
it sends next. Clients come from different loopback addresses (127.0.0.x), as different hosts would.
Secrets and tokens never reach the logs."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.config.service import SecurityConfig
from agent.security import AddressList
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import API_KEY, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record

PLATFORM = "127.0.0.0/29"  # 127.0.0.1–.7 stand for PIOPIY; 127.0.0.9 and up for anyone else
WINDOW_S = 2.0
PEERS = ("websockets.client", "httpx", "httpcore")
"""Loggers of the clients playing PIOPIY and the operator in these tests (they print URLs they use)."""
ANSWER = {"from": "919876543210", "to": SUPPORT_NUMBER, "cmiuuid": "auth-1"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    security = {"platform_ips": [PLATFORM], "max_failed_auth": 3, "failed_auth_window_s": WINDOW_S}
    with running_service(tmp_path_factory.mktemp("guarded"), security=security) as service:
        yield service


@pytest.fixture
async def from_host() -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(address: str, service: Service) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        client = httpx.AsyncClient(base_url=service.url, transport=transport, timeout=10)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def test_address_lists_take_ips_and_networks_and_empty_allows_all() -> None:
    listed = AddressList(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])
    assert listed.allows("10.200.1.1") and listed.allows("192.0.2.7") and listed.allows("2001:db8::1")
    assert not listed.allows("192.0.2.8") and not listed.allows("127.0.0.1") and not listed.allows(None)
    assert not listed.allows("testclient")  # no address at all is not on the list
    assert AddressList([]).allows("203.0.113.5") and AddressList([]).allows(None)
    with pytest.raises(ValueError, match="not an IP address or CIDR network"):
        SecurityConfig(platform_ips=["10.0.0.0/33"])


async def test_only_platform_addresses_reach_piopiy_surfaces(guarded: Service, from_host: object) -> None:
    outsider = from_host("127.0.0.9", guarded)  # type: ignore[operator]
    refused = await outsider.post("/piopiy/answer", json=ANSWER, headers=guarded.headers)
    assert refused.status_code == 403 and "platform_ips" in refused.json()["detail"]
    assert (
        await outsider.get("/api/calls", headers=guarded.headers)
    ).status_code == 200  # the API is not PIOPIY's
    platform = from_host("127.0.0.2", guarded)  # type: ignore[operator]
    pcmo = (await platform.post("/piopiy/answer", json=ANSWER, headers=guarded.headers)).json()
    ws_url = next(a["ws_url"] for a in pcmo if a["action"] == "stream")
    # A valid stream token is no use from elsewhere: the socket is closed before it is even checked.
    async with connect(ws_url, local_addr=("127.0.0.9", 0)) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert (ws.close_code, ws.close_reason) == (1008, "not platform")
    # The same token still opens the call from a platform address (it was not used up).
    async with connect(ws_url, local_addr=("127.0.0.2", 0)) as ws:
        assert isinstance(await asyncio.wait_for(ws.recv(), 10), str)  # the greeting's first audio


async def test_an_address_guessing_secrets_is_refused_for_a_while(
    guarded: Service, from_host: object
) -> None:
    guesser = from_host("127.0.0.3", guarded)  # type: ignore[operator]
    neighbour = from_host("127.0.0.4", guarded)  # type: ignore[operator]
    for attempt in range(3):
        wrong = await guesser.get("/api/calls", headers={"X-Hotline-Secret": f"guess-{attempt}"})
        assert wrong.status_code == 401
    # Used up: even the right secret is refused from there, on every surface…
    assert (await guesser.get("/api/calls", headers=guarded.headers)).status_code == 429
    assert (await guesser.post("/piopiy/answer", json=ANSWER, headers=guarded.headers)).status_code == 429
    live = guarded.url.replace("http", "ws", 1) + "/api/live"
    async with connect(live, local_addr=("127.0.0.3", 0), additional_headers=guarded.api_headers) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_reason == "too many failed attempts"
    # …but not from other addresses, and not for long.
    assert (await neighbour.get("/api/calls", headers=guarded.headers)).status_code == 200
    await asyncio.sleep(WINDOW_S + 0.2)
    assert (await guesser.get("/api/calls", headers=guarded.headers)).status_code == 200


async def test_forged_stream_tokens_count_as_failures(guarded: Service, from_host: object) -> None:
    platform = from_host("127.0.0.5", guarded)  # type: ignore[operator]
    pcmo = (await platform.post("/piopiy/answer", json=ANSWER, headers=guarded.headers)).json()
    ws_url = next(a["ws_url"] for a in pcmo if a["action"] == "stream")
    forged = ws_url.rsplit("token=", 1)[0] + "token=forged"
    for _ in range(3):
        async with connect(forged, local_addr=("127.0.0.5", 0)) as ws:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_reason == "invalid stream token"
    async with connect(ws_url, local_addr=("127.0.0.5", 0)) as ws:  # the genuine token, too late
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_reason == "too many failures"
    other = from_host("127.0.0.6", guarded)  # type: ignore[operator]
    metrics = await other.get("/metrics", headers=guarded.headers)
    counted = [
        line for line in metrics.text.splitlines() if 'stage="auth"' in line and 'kind="stream"' in line
    ]
    assert counted and float(counted[0].split()[-1]) >= 3


async def test_secrets_and_tokens_never_reach_the_logs(
    guarded: Service, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    sim = PiopiySimulator(guarded.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        token = str(httpx.URL(call.ws_url).params["token"])
        await call.wait_until_bot_silent(quiet_s=0.5, timeout=20)
        await call.hangup()
    async with httpx.AsyncClient(base_url=guarded.url, timeout=10) as http:
        await http.get("/api/calls", headers={"X-Hotline-Secret": "not-" + WEBHOOK_SECRET})
        await http.get("/api/calls", headers={"Authorization": "Bearer not-" + API_KEY})
        await http.get("/api/calls", headers=guarded.webhook_headers)  # the webhook secret is no API key
        await http.get("/api/calls", headers=guarded.headers)
    record = await final_record(guarded, call_id_of(call.pcmo))
    security = guarded.settings.service.security
    secrets = [
        WEBHOOK_SECRET,
        API_KEY,
        token,
        *(os.environ[security.stream_secret_env], os.environ[security.session_secret_env]),
    ]
    ours = [r for r in caplog.records if not r.name.startswith(PEERS)]  # not the simulated platform's
    leaks = [(r.name, r.getMessage()) for r in ours if any(s in r.getMessage() for s in secrets)]
    assert any(r.name.startswith("agent.") for r in caplog.records)  # the service did log this call…
    assert leaks == []  # …but none of its secrets
    assert token not in str(record)  # the record keeps the ws_url with the token redacted
