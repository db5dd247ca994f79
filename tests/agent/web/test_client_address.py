"""Whose address a request is counted under: only our balancers' X-Forwarded-For is believed, and of it
only what they appended; a client's own entries never count (agent/web/client_address.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent.config.service import ServerConfig, ServiceConfig
from agent.config.yamlfile import ConfigError
from agent.web.client_address import ClientAddressMiddleware, TrustedProxies

BALANCER = "10.0.0.5"


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # No proxy trusted: whatever the header says, the peer is the client.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # The balancer appended the address it saw: the rightmost entry, not the client-written left one.
        (BALANCER, ["198.51.100.1, 203.0.113.9"], "203.0.113.9"),
        (BALANCER, ["198.51.100.1", "203.0.113.9"], "203.0.113.9"),  # two header lines: the same list
        (BALANCER, ["203.0.113.9"], "203.0.113.9"),
        # A chain of trusted hops (an outer balancer, then ours): each vouches for the next one left.
        (BALANCER, ["198.51.100.1, 203.0.113.9, 10.0.0.7"], "203.0.113.9"),
        # Every entry a trusted hop: the leftmost of them (still written by a hop we trust).
        (BALANCER, ["10.0.0.9"], "10.0.0.9"),
        # Junk from a trusted hop: the last address we can vouch for (that hop's own).
        (BALANCER, ["198.51.100.1, not-an-address"], BALANCER),
        (BALANCER, [""], BALANCER),
        (BALANCER, [], BALANCER),
        # Ports and IPv6, as proxies write them.
        (BALANCER, ["203.0.113.9:4711"], "203.0.113.9"),
        (BALANCER, ["[2001:db8::7]:443"], "2001:db8::7"),
        (BALANCER, ["2001:db8::7"], "2001:db8::7"),
        # A dual-stack socket's view of an IPv4 balancer.
        ("::ffff:10.0.0.5", ["203.0.113.9"], "203.0.113.9"),
    ],
)
def test_the_client_is_what_the_trusted_hops_saw(peer: str, forwarded_for: list[str], client: str) -> None:
    proxies = TrustedProxies(["10.0.0.0/24"] if peer != "203.0.113.9" else [])
    assert proxies.client_of(peer, forwarded_for) == client


def test_a_peer_that_is_not_a_trusted_proxy_is_the_client_whatever_it_writes() -> None:
    proxies = TrustedProxies([BALANCER])
    assert proxies.client_of("203.0.113.9", ["10.0.0.5, 198.51.100.1"]) == "203.0.113.9"
    assert proxies.client_of(None, ["198.51.100.1"]) is None  # no peer (a unix socket): nothing to believe


def _echo_app(trusted: list[str]) -> Any:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {"client": request.client.host if request.client else None, "scheme": request.url.scheme}
        )

    return ClientAddressMiddleware(Starlette(routes=[Route("/", echo)]), TrustedProxies(trusted))


async def _seen(app: Any, peer: str, headers: dict[str, str]) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app, client=(peer, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://hotline") as http:
        seen: dict[str, Any] = (await http.get("/", headers=headers)).json()
        return seen


async def test_the_middleware_rewrites_the_client_and_scheme_for_trusted_balancers_only() -> None:
    forged = {"X-Forwarded-For": "198.51.100.1, 203.0.113.9", "X-Forwarded-Proto": "https"}
    behind = await _seen(_echo_app([BALANCER]), BALANCER, forged)
    assert behind == {"client": "203.0.113.9", "scheme": "https"}
    direct = await _seen(_echo_app([BALANCER]), "203.0.113.50", forged)
    assert direct == {"client": "203.0.113.50", "scheme": "http"}
    # The default: trust no proxy, not even one on loopback (uvicorn's own default trusted 127.0.0.1).
    assert (await _seen(_echo_app([]), "127.0.0.1", forged))["client"] == "127.0.0.1"


@pytest.mark.parametrize("entry", ["*", "0.0.0.0/0", "::/0", "balancer.local", "10.0.0.0/33"])
def test_trusting_everyone_or_a_non_address_is_a_config_error(entry: str) -> None:
    with pytest.raises(ValueError, match="trusted_proxies"):
        ServerConfig(trusted_proxies=[entry])


def test_hotline_trusted_proxies_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", " 172.28.0.2, 10.1.0.0/16 ")
    assert ServiceConfig().server.trusted_proxies == ["172.28.0.2", "10.1.0.0/16"]
    monkeypatch.setenv("HOTLINE_TRUSTED_PROXIES", "*")
    with pytest.raises(ValueError, match="HOTLINE_TRUSTED_PROXIES: '\\*' is not an IP address"):
        ServiceConfig()


def test_a_config_file_trusting_everyone_is_refused_with_its_line(tmp_path: Any) -> None:
    from agent.config.settings import load_settings
    from tests.agent.conftest import write_config

    path = write_config(tmp_path, server={"trusted_proxies": ["0.0.0.0/0"]})
    with pytest.raises(ConfigError, match="trusts every address"):
        load_settings(path)
