"""What the service's own HTTP requests carry: HTTP tools and `notify` webhooks keep no cookie from one
call to the next, take no proxy from the environment unless `outbound_http.env_proxy` says so, and a
path placeholder cannot climb out of its segment. Calls here are real `CallSession`s of a runtime with
stand-in speech models, against a real local backend."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.call.events import TurnLatency
from agent.call.session import CallSession
from agent.config.settings import load_settings
from agent.dialogue.tools import ToolError
from agent.worker.bus import LiveEvent
from agent.worker.runtime import Runtime, new_call_id
from testkit.backends import FakeToolBackend
from testkit.call_fakes import FakeLink
from testkit.standins import StandInModels
from tests.agent.conftest import set_secrets, write_config

CALLER = "919876543210"  # has a balance at the backend
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")

Start = Callable[..., AsyncIterator[Runtime]]


@pytest.fixture
def backend() -> Iterator[FakeToolBackend]:
    with FakeToolBackend() as served:
        yield served


@pytest.fixture
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture
async def runtimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """Start runtimes (stand-in models, SQLite under tmp_path) with config overrides; all stopped after."""
    monkeypatch.setenv("ACME_API_TOKEN", "demo")
    set_secrets()
    started: list[Runtime] = []

    async def start(**config: Any) -> Runtime:
        directory = tmp_path / f"runtime-{len(started)}"
        directory.mkdir()
        runtime = await Runtime.start(load_settings(write_config(directory, **config)), StandInModels())
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.stop(deadline_s=0)


async def a_call(
    runtime: Runtime, backend: FakeToolBackend, caller: str = CALLER, **bot_changes: Any
) -> CallSession:
    """A new call to support_desk, its tools and webhooks pointed at `backend` (as `call.py` makes one)."""
    bot = backend.point(runtime.settings.bots["support_desk"]).model_copy(update=bot_changes)
    call_id = new_call_id()
    await runtime.store.create_call(id=call_id, bot="support_desk", status="active", started_at=time.time())

    link = FakeLink()  # nothing listens: the test reads the call's live events
    return CallSession(
        runtime, call_id=call_id, bot_name="support_desk", bot=bot, link=link, caller_number=caller
    )


async def balance(call: CallSession) -> dict[str, Any]:
    return await call.answerer.run_tool("account_balance", {"phone": call.ctx.caller_number})


def cookies_sent(backend: FakeToolBackend) -> list[str | None]:
    return [r.headers.get("cookie") for r in backend.requests]


async def test_a_backend_cookie_stays_with_its_call(
    runtimes: Callable[..., Any], backend: FakeToolBackend, no_proxies: None
) -> None:
    runtime = await runtimes()
    first = await a_call(runtime, backend)
    backend.set_cookie = "session=first-caller; Path=/"
    await balance(first)
    await balance(first)  # the same call: its backend session goes on
    backend.set_cookie = None
    second = await a_call(runtime, backend)
    await balance(second)
    hook = second.bot.webhooks["supervisors"]
    delivery = await runtime.notifier.send("supervisors", hook, {"call_id": second.call_id})
    assert delivery.ok
    assert cookies_sent(backend) == [None, "session=first-caller", None, None]
    assert [r.raw_path for r in backend.requests][-1] == "/notify/supervisors"


@pytest.mark.parametrize("env_proxy", [False, True])
async def test_proxies_in_the_environment_are_used_only_when_configured(
    runtimes: Callable[..., Any],
    backend: FakeToolBackend,
    monkeypatch: pytest.MonkeyPatch,
    no_proxies: None,
    env_proxy: bool,
) -> None:
    with FakeToolBackend() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.setenv(name, proxy.base_url)
        runtime = await runtimes(outbound_http={"env_proxy": env_proxy})
        call = await a_call(runtime, backend)
        try:
            await balance(call)
        except ToolError:
            assert env_proxy  # the fake proxy may not answer like the backend: only where it went matters
        hook = call.bot.webhooks["supervisors"]
        await runtime.notifier.send("supervisors", hook.model_copy(update={"retries": 0}), {"x": 1})
        went_direct = [r.raw_path for r in backend.requests]
        via_proxy = len(proxy.requests)
    if env_proxy:
        assert went_direct == [] and via_proxy == 2
    else:
        assert went_direct == [f"/accounts/{CALLER}/balance", "/notify/supervisors"] and via_proxy == 0


@pytest.mark.parametrize("number", ["..", ".", ""])
async def test_a_dot_segment_in_a_path_fails_the_tool_and_the_caller_hears_the_fallback(
    runtimes: Callable[..., Any], backend: FakeToolBackend, no_proxies: None, number: str
) -> None:
    runtime = await runtimes()
    # What the failed tool makes the caller hear, not the handoff after it (no rules, no desk to go to).
    runtime.rules["support_desk"] = []
    call = await a_call(runtime, backend, caller=number, departments={})
    events = runtime.bus.subscribe(call.call_id)
    await call.answerer.answer("What is my balance?", time.monotonic(), None, TurnLatency())
    seen: list[LiveEvent] = []
    while not events.queue.empty():
        seen.append(events.queue.get_nowait())
    events.close()
    assert backend.requests == []  # `/accounts/../balance` would have been `/balance`
    failure = next(e.data for e in seen if e.kind == "tool.failure")
    assert failure == {"tool": "account_balance", "error": "bad_args"}
    await call.close("test")
    await runtime.writer.flush(10)
    record = await runtime.store.call_record(call.call_id)
    assert record is not None
    assert [(t["role"], t["text"]) for t in record["turns"]] == [("bot", call.bot.phrases.fallback)]
    assert [e["status"] for e in record["events"] if e["source"] == "tool"] == ["failure"]
