"""Which address a request comes from: the peer's, or behind a trusted balancer the one the balancer saw.

A client writes whatever it likes into X-Forwarded-For; only what our own balancers (and the proxies
they trust in turn) appended can be believed. The address is resolved once, in an ASGI middleware that
rewrites `scope["client"]`, so every surface that limits or filters by address (webhooks, /api, the
dashboard's login limiter, the stream socket's `platform_ips` and token-failure limiter, /api/live)
reads the same answer. uvicorn's own proxy-header handling is switched off (agent/worker/serve.py): with
`FORWARDED_ALLOW_IPS="*"` it took the leftmost, client-written entry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from agent.config.service import proxy_networks

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IpAddress | None:
    """An X-Forwarded-For entry as an address: `1.2.3.4`, `1.2.3.4:5678`, `::1` or `[::1]:80`."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: compare them with IPv4 networks.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return mapped or address


class TrustedProxies:
    """The balancers whose X-Forwarded-For we believe (`server.trusted_proxies`); empty: none."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.networks = proxy_networks(entries)

    def trusts(self, address: IpAddress | None) -> bool:
        """Whether `address` is one of our balancers."""
        return address is not None and any(address in network for network in self.networks)

    def client_of(self, peer: str | None, forwarded_for: list[str]) -> str | None:
        """The client's address: `peer` (who connected to us) unless it is a trusted proxy; then the entry
        that proxy appended (the rightmost), and so on leftwards while that entry is a trusted proxy too.
        Entries left of the last trusted hop were written by the client and are never used."""
        current = _address(peer or "")
        if not self.trusts(current):
            return peer
        hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
        while hops and self.trusts(current):
            appended = _address(hops.pop())
            if appended is None:
                break  # a hop we trust wrote junk: the last address we can vouch for is that hop's own
            current = appended
        return str(current)


class ClientAddressMiddleware:
    """ASGI middleware: `scope["client"]` (and the scheme) as a trusted balancer reported them; a peer that
    is not a trusted proxy keeps its own address whatever headers it sends."""

    def __init__(self, app: ASGIApp, proxies: TrustedProxies) -> None:
        self.app = app
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.proxies.networks:
            peer_host, peer_port = scope.get("client") or (None, 0)
            if self.proxies.trusts(_address(peer_host or "")):
                forwarded = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"]
                protos = [v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-proto"]
                client = self.proxies.client_of(peer_host, forwarded)
                scope = dict(scope)
                scope["client"] = (client, 0 if client != peer_host else peer_port)
                proto = protos[-1].split(",")[-1].strip().lower() if protos else ""  # the balancer's own
                if proto in ("http", "https"):
                    secure = proto == "https"
                    scope["scheme"] = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
        await self.app(scope, receive, send)
