"""The edge, for real: a `hotline serve` process behind the shipped HAProxy config (deploy/compose/
haproxy.cfg, only its addresses changed), both started here.

- A client that forges X-Forwarded-For (naming PIOPIY's or a supervisor's address) can neither pass
  `security.platform_ips` nor lock anyone else out (agent/web/client_address.py, the balancer's header).
- HAProxy's log shows no secret, stream token or password (its log-format redacts query values).
- Clients that send headers or bodies a byte at a time are cut (408) within the deadlines, while
  other requests are served meanwhile (agent/web/http_protocol.py, agent/web/request_body.py).

Clients come from different loopback addresses (127.0.0.x), as different hosts would; HAProxy reaches
the worker from 127.0.0.1, the worker's only trusted proxy. The worker also gets the old, ignored
`FORWARDED_ALLOW_IPS="*"` in its environment, as a deployment that still sets it would.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from agent.dashboard.auth import hash_password
from agent.web.http_protocol import BODY_GRACE_S, MAX_HEADER_BYTES, DeadlineH11Protocol
from agent.worker.serve import uvicorn_config
from tests.agent.conftest import API_KEY, REPO, SUPPORT_NUMBER, WEBHOOK_SECRET, write_config
from tests.agent.test_lifecycle import ENV, HOTLINE, WORKER_START_S, _free_port

HAPROXY_CFG = REPO / "deploy" / "compose" / "haproxy.cfg"
BALANCER = "127.0.0.1"  # HAProxy's address as the worker sees it
PIOPIY = "127.0.0.2"  # the only address in security.platform_ips
SUPERVISOR = "127.0.0.3"
MAX_FAILURES = 3
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
HEADROOM_S = 8.0  # a busy 2-core machine: the cut may come this much after its deadline
DRIBBLE_S = 0.2  # a slow client's pause between bytes
PASSWORD = "correct horse battery staple"
SECRET = {"X-Hotline-Secret": WEBHOOK_SECRET}
ANSWER = {"from": "919876543210", "to": SUPPORT_NUMBER, "cmiuuid": "edge-1"}


@dataclass
class Edge:
    """The worker (direct URL), the balancer in front of it, and their logs."""

    worker: str
    balancer: str
    worker_log: Path
    balancer_log: Path


def balancer_config(balancer_port: int, worker_port: int) -> str:
    """The shipped haproxy.cfg with this machine's addresses: its own port, the worker's, no Docker DNS.
    Everything else (headers, log format, timeouts, checks) is the file as shipped."""
    text = HAPROXY_CFG.read_text()
    edits = [
        (r"(?m)^(\s*bind) :8080$", rf"\1 127.0.0.1:{balancer_port}"),
        (r"(?m)^(\s*server \S+) \S+$", rf"\1 127.0.0.1:{worker_port}"),
        (r"(?ms)^resolvers docker$.*?^$", ""),
        (r" resolvers docker", ""),
    ]
    for pattern, replacement in edits:
        text, count = re.subn(pattern, replacement, text)
        assert count >= 1, f"haproxy.cfg changed shape: {pattern} not found"
    return text


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up: {log.read_text()[-3000:]}"
        time.sleep(0.25)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    directory = tmp_path_factory.mktemp("edge")
    worker_port, balancer_port = _free_port(), _free_port()
    balancer_url = f"http://127.0.0.1:{balancer_port}"
    config = write_config(
        directory,
        prompts_dir=str(REPO / "prompts"),
        server={
            "host": "127.0.0.1",
            "port": worker_port,
            "public_url": balancer_url,  # PIOPIY opens the stream through the balancer, as deployed
            "trusted_proxies": [BALANCER],
            "header_timeout_s": HEADER_TIMEOUT_S,
            "body_timeout_s": BODY_TIMEOUT_S,
        },
        security={"platform_ips": [PIOPIY], "max_failed_auth": MAX_FAILURES, "failed_auth_window_s": 300},
        dashboard={
            "users": {"sam": hash_password(PASSWORD, iterations=1000)},
            "max_failed_logins": MAX_FAILURES,
            "failed_login_window_s": 300,
        },
    )
    worker_log, balancer_log = directory / "worker.log", directory / "haproxy.log"
    cfg = directory / "haproxy.cfg"
    cfg.write_text(balancer_config(balancer_port, worker_port))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        env = {**os.environ, **ENV, "FORWARDED_ALLOW_IPS": "*"}
        env.pop("HOTLINE_TRUSTED_PROXIES", None)
        with worker_log.open("wb") as out:
            worker = subprocess.Popen(
                [str(HOTLINE), "--config", str(config), "--log-format", "json", "serve"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        processes.append(worker)
        wait_healthy(f"http://127.0.0.1:{worker_port}", worker, worker_log, WORKER_START_S)
        with balancer_log.open("wb") as out:
            haproxy = subprocess.Popen(
                ["haproxy", "-db", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT
            )
        processes.append(haproxy)
        wait_healthy(balancer_url, haproxy, balancer_log, 30)
        yield Edge(f"http://127.0.0.1:{worker_port}", balancer_url, worker_log, balancer_log)
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def client_at() -> AsyncIterator[Callable[[str, str], httpx.AsyncClient]]:
    """HTTP clients that connect from a given loopback address (another host) to a given URL."""
    clients: list[httpx.AsyncClient] = []

    def make(address: str, url: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        client = httpx.AsyncClient(base_url=url, transport=transport, timeout=15)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def stream_url(pcmo: list[dict[str, Any]]) -> str:
    return str(next(a["ws_url"] for a in pcmo if a["action"] == "stream"))


async def closed_with(
    ws_url: str, address: str, headers: dict[str, str] | None = None
) -> tuple[int | None, str]:
    """Open the socket from `address`; the close code and reason it gets before any audio."""
    async with connect(ws_url, local_addr=(address, 0), additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    return ws.close_code, ws.close_reason


# ------------------------------------------------------------------------------ forged client addresses


async def test_a_forged_x_forwarded_for_neither_passes_platform_ips_nor_locks_piopiy_out(
    edge: Edge, client_at: Callable[[str, str], httpx.AsyncClient]
) -> None:
    claims_piopiy = {"X-Forwarded-For": PIOPIY}
    attacker = client_at("127.0.0.9", edge.balancer)
    # Claiming PIOPIY's address, with the right secret: still not a platform address.
    refused = await attacker.post("/piopiy/answer", json=ANSWER, headers={**SECRET, **claims_piopiy})
    assert refused.status_code == 403 and "platform_ips" in refused.json()["detail"]
    # Wrong secrets in PIOPIY's name: only the sender is locked out…
    for attempt in range(MAX_FAILURES):
        wrong = {"X-Hotline-Secret": f"guess-{attempt}", **claims_piopiy}
        assert (await attacker.get("/api/calls", headers=wrong)).status_code == 401
    assert (await attacker.get("/api/calls", headers={**SECRET, **claims_piopiy})).status_code == 429
    # …PIOPIY's answer_url still answers, and its stream opens through the balancer.
    piopiy = client_at(PIOPIY, edge.balancer)
    answered = await piopiy.post("/piopiy/answer", json=ANSWER, headers=SECRET)
    assert answered.status_code == 200, answered.text
    ws_url = stream_url(answered.json())
    assert ws_url.startswith(edge.balancer.replace("http", "ws", 1) + "/stream?")
    # A genuine token from another host claiming PIOPIY's address: closed before the token is checked,
    # by the socket's failure limit for the locked-out sender, by platform_ips for anyone else.
    assert await closed_with(ws_url, "127.0.0.9", claims_piopiy) == (1008, "too many failures")
    assert await closed_with(ws_url, "127.0.0.10", claims_piopiy) == (1008, "not platform")
    async with connect(ws_url, local_addr=(PIOPIY, 0)) as ws:  # the same token, from PIOPIY: a call
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "streamAudio"


async def test_a_forged_x_forwarded_for_cannot_lock_a_supervisor_out_of_the_dashboard(
    edge: Edge, client_at: Callable[[str, str], httpx.AsyncClient]
) -> None:
    attacker = client_at("127.0.0.11", edge.balancer)
    for _ in range(MAX_FAILURES):
        failed = await attacker.post(
            "/dashboard/login",
            data={"user": "sam", "password": "guess"},
            headers={"X-Forwarded-For": SUPERVISOR},
        )
        assert failed.status_code == 401
    blocked = await attacker.post("/dashboard/login", data={"user": "sam", "password": PASSWORD})
    assert blocked.status_code == 429  # the guesser itself is counted…
    supervisor = client_at(SUPERVISOR, edge.balancer)
    logged_in = await supervisor.post("/dashboard/login", data={"user": "sam", "password": PASSWORD})
    assert logged_in.status_code == 303  # …not the address it claimed


async def test_behind_a_trusted_hop_only_the_address_it_appended_counts(
    edge: Edge, client_at: Callable[[str, str], httpx.AsyncClient]
) -> None:
    # A trusted proxy that appends (like `option forwardfor`): the client wrote the left entry.
    hop = client_at(BALANCER, edge.worker)
    forged = await hop.post(
        "/piopiy/answer", json=ANSWER, headers={**SECRET, "X-Forwarded-For": f"{PIOPIY}, 127.0.0.12"}
    )
    assert forged.status_code == 403
    genuine = await hop.post(
        "/piopiy/answer", json=ANSWER, headers={**SECRET, "X-Forwarded-For": f"127.0.0.12, {PIOPIY}"}
    )
    assert genuine.status_code == 200
    # Not a trusted proxy: its own address counts, whatever it writes.
    stranger = client_at("127.0.0.12", edge.worker)
    direct = await stranger.post("/piopiy/answer", json=ANSWER, headers={**SECRET, "X-Forwarded-For": PIOPIY})
    assert direct.status_code == 403
    lines = edge.worker_log.read_text().splitlines()
    assert any("FORWARDED_ALLOW_IPS is ignored" in line for line in lines)


# ------------------------------------------------------------------------------------- balancer logs


async def test_the_balancer_log_holds_no_secret_token_or_password(
    edge: Edge, client_at: Callable[[str, str], httpx.AsyncClient]
) -> None:
    piopiy = client_at(PIOPIY, edge.balancer)
    answered = await piopiy.post(
        f"/piopiy/answer?secret={WEBHOOK_SECRET}", json={**ANSWER, "cmiuuid": f"edge-{uuid.uuid4()}"}
    )  # PIOPIY's answer_url, for a call of its own: a retried cmiuuid gets the ws_url answered before
    assert answered.status_code == 200
    ws_url = stream_url(answered.json())
    token = str(httpx.URL(ws_url).params["token"])
    assert (await piopiy.get("/api/calls", headers={"Authorization": f"Bearer {API_KEY}"})).is_success
    async with connect(ws_url, local_addr=(PIOPIY, 0)) as ws:
        await asyncio.wait_for(ws.recv(), 30)
    supervisor = client_at("127.0.0.13", edge.balancer)
    login = await supervisor.post("/dashboard/login", data={"user": "sam", "password": PASSWORD})
    cookie = login.cookies["hotline_session"]
    assert (await supervisor.get("/dashboard/live.json")).is_success  # the client sends the cookie
    # HAProxy writes a request's line when it ends (the socket's when it closes): wait for the last one.
    deadline = time.monotonic() + 20
    while "/dashboard/live.json" not in (text := edge.balancer_log.read_text()) or f"\n{PIOPIY}:" not in text:
        assert time.monotonic() < deadline, text[-3000:]
        await asyncio.sleep(0.2)
    stream_secret = ENV["HOTLINE_STREAM_SECRET"]
    secrets = (WEBHOOK_SECRET, API_KEY, token, PASSWORD, cookie, stream_secret, "correct+horse")
    for secret in secrets:
        assert secret not in text
    assert '"POST /piopiy/answer?secret=redacted"' in text  # the request is there, its secret is not
    stream_line = [line for line in text.splitlines() if "/stream?" in line and line.startswith(PIOPIY)][-1]
    assert re.search(r'"GET /stream\?(\w+=redacted&)*token=redacted(&\w+=redacted)*"', stream_line), (
        stream_line
    )


# ------------------------------------------------------------------------------------ slow clients


@dataclass
class Cut:
    """How a slow client's connection ended."""

    after_s: float
    """From the moment the client was due (connected, or its headers sent) to the server's close."""
    response: bytes
    finished_sending: bool
    """The client sent everything it meant to before the server closed: nobody cut it."""


async def connect_from(address: str, url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    target = httpx.URL(url)
    return await asyncio.open_connection(target.host, target.port, local_addr=(address, 0))


async def dribble(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, slow: bytes
) -> Cut:
    """Send `head` at once, then `slow` a byte every DRIBBLE_S; read until the server closes."""
    writer.write(head)
    await writer.drain()
    due = (
        time.monotonic()
    )  # a header deadline counts from the connection (or first byte), a body's from its headers
    response = asyncio.ensure_future(reader.read())
    finished = True
    try:
        for byte in slow:
            if response.done():
                finished = False
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(DRIBBLE_S)
    except ConnectionError:
        finished = False
    try:
        data = await asyncio.wait_for(response, 2 * HEADROOM_S)  # past any deadline: not cut
    except (ConnectionError, TimeoutError):
        data = b""
    finally:
        writer.close()
    return Cut(time.monotonic() - due, data, finished)


async def slow_client(address: str, url: str, head: bytes, slow: bytes) -> Cut:
    """A new connection from `address` that sends `head`, then dribbles `slow`."""
    reader, writer = await connect_from(address, url)
    return await dribble(reader, writer, head, slow)


def slow_bytes(limit_s: float) -> bytes:
    """More bytes than a client dribbling at DRIBBLE_S could send before the deadline and its headroom."""
    return b"x" * int((limit_s + HEADROOM_S + 10) / DRIBBLE_S)


async def test_slow_headers_and_bodies_are_cut_while_other_requests_are_served(edge: Edge) -> None:
    worker = httpx.URL(edge.worker)
    host = f"Host: {worker.host}:{worker.port}\r\n".encode()
    header_junk = slow_bytes(HEADER_TIMEOUT_S)
    body = slow_bytes(BODY_TIMEOUT_S + BODY_GRACE_S)

    def post(path: str, content_type: str, extra: bytes = b"") -> bytes:
        return (
            f"POST {path} HTTP/1.1\r\n".encode() + host + extra
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )  # fmt: skip

    secret = f"X-Hotline-Secret: {WEBHOOK_SECRET}\r\n".encode()

    async def second_request_slow() -> Cut:
        # One request served on a kept-alive connection, then the next one's headers a byte at a time.
        reader, writer = await connect_from("127.0.0.21", edge.worker)
        writer.write(b"GET /livez HTTP/1.1\r\n" + host + b"\r\n")
        await writer.drain()
        first = await asyncio.wait_for(reader.readuntil(b'{"status":"alive"}'), 15)
        assert first.startswith(b"HTTP/1.1 200")
        return await dribble(reader, writer, b"", b"GET /livez HTTP/1.1\r\n" + header_junk)

    slow = {
        "silent": slow_client("127.0.0.20", edge.worker, b"", b""),
        "headers": slow_client(
            "127.0.0.22", edge.worker, b"GET /healthz HTTP/1.1\r\n" + host, b"X-Slow: " + header_junk
        ),
        "webhook body": slow_client(
            PIOPIY, edge.worker, post("/piopiy/answer", "application/json", secret), body
        ),
        "dashboard form": slow_client(
            "127.0.0.23", edge.worker, post("/dashboard/login", "application/x-www-form-urlencoded"), body
        ),
        "typed body": slow_client(
            "127.0.0.24", edge.worker, post("/api/calls/c_none/hangup", "application/json", secret), body
        ),
        "kept-alive": second_request_slow(),
    }
    pending = {name: asyncio.ensure_future(coro) for name, coro in slow.items()}
    # Meanwhile the worker answers everyone else at once.
    async with httpx.AsyncClient(base_url=edge.worker, timeout=15) as http:
        served = 0
        while not all(task.done() for task in pending.values()):
            started = time.monotonic()
            assert (await http.get("/healthz")).status_code == 200
            assert time.monotonic() - started < 5
            served += 1
            await asyncio.sleep(0.3)
    assert served >= 3
    cuts = {name: task.result() for name, task in pending.items()}
    limits = {"silent": HEADER_TIMEOUT_S, "headers": HEADER_TIMEOUT_S, "kept-alive": HEADER_TIMEOUT_S,
              "webhook body": BODY_TIMEOUT_S, "dashboard form": BODY_TIMEOUT_S,
              "typed body": BODY_TIMEOUT_S + BODY_GRACE_S}  # fmt: skip
    for name, cut in cuts.items():
        assert not cut.finished_sending or name == "silent", f"{name}: never cut"  # silent: sends nothing
        assert limits[name] - 0.3 <= cut.after_s <= limits[name] + HEADROOM_S, (
            f"{name}: cut after {cut.after_s:.1f} s"
        )
        assert cut.response.startswith(b"HTTP/1.1 408 "), f"{name}: {cut.response[:200]!r}"
    # The service's own body reads answer in its JSON shape, with the reason.
    assert b'"error":"body too slow"' in cuts["webhook body"].response
    assert b'"error":"form too slow"' in cuts["dashboard form"].response
    assert b"request body not received within" in cuts["typed body"].response
    logged = edge.worker_log.read_text()
    assert "request headers not received within 2 s: closed (408)" in logged
    assert "body not received within 2 s" in logged


async def test_a_request_head_over_the_limit_is_refused_at_once(edge: Edge) -> None:
    # Never more than MAX_HEADER_BYTES of an unfinished request line and headers kept per connection.
    reader, writer = await connect_from("127.0.0.25", edge.worker)
    writer.write(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"x" * (MAX_HEADER_BYTES + 1))
    await writer.drain()
    started = time.monotonic()
    response = await asyncio.wait_for(reader.read(), 2 * HEADROOM_S)
    writer.close()
    assert response.startswith(b"HTTP/1.1 400 ")
    assert time.monotonic() - started < HEADER_TIMEOUT_S  # refused for its size, not its slowness


def test_hotline_serve_runs_uvicorn_with_the_deadlines_and_limits() -> None:
    from agent.config.settings import load_settings

    settings = load_settings(REPO / "config.yaml")
    settings.service.server.header_timeout_s = 3.5
    config = uvicorn_config(settings)
    assert isinstance(config.http, type) and issubclass(config.http, DeadlineH11Protocol)
    assert config.http.deadlines.header_timeout_s == 3.5
    assert config.http.deadlines.body_timeout_s == settings.service.server.body_timeout_s
    assert config.timeout_keep_alive == settings.service.server.keep_alive_timeout_s == 15
    assert config.h11_max_incomplete_event_size == MAX_HEADER_BYTES
    assert config.proxy_headers is False
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["server"]
    assert {"header_timeout_s", "body_timeout_s", "keep_alive_timeout_s", "trusted_proxies"} <= set(shipped)
