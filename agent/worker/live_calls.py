"""The calls live in this process, kept listed in the cluster's registry, and the orders run on them
(here, or sent to the worker that owns the call)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import RedisError

from agent.escalation.rules import CompiledRule
from agent.telephony.carrier import CallNews
from agent.worker.cluster import Cluster
from agent.worker.commands import CarrierEvent, Command, Keypad, Listen, News, Supervise
from agent.worker.listen import ListenHub

log = logging.getLogger(__name__)


class LiveCall(Protocol):
    """What the process needs of a live call (agent.call.session.CallSession is one)."""

    call_id: str
    bot_name: str

    @property
    def cmiuuid(self) -> str | None: ...

    def live_info(self) -> dict[str, Any]:
        """What listings of live calls show about it."""
        ...

    def take_rules(self, rules: list[CompiledRule]) -> None: ...

    async def close(self, reason: str, *, dropped: bool = False) -> None: ...

    async def on_news(self, news: CallNews | None) -> None: ...

    async def on_dtmf(self, digits: str) -> None: ...

    async def supervise(self, kind: str, department: str | None, user: str | None) -> None: ...

    async def listened(self, user: str | None) -> None: ...


class LiveCalls:
    """This process's live calls by call id; the cluster (when there is one) lists them for the others."""

    def __init__(self, listen: ListenHub) -> None:
        self.sessions: dict[str, LiveCall] = {}
        self.listen = listen
        self.cluster: Cluster | None = None
        """The other workers (Redis): None when this worker runs alone."""
        self.decode_event: Callable[[Any], CallNews | None] | None = None
        """Reads the carrier's own event body, as the previous release forwarded it (set by the app)."""
        self._idle = asyncio.Event()

    def register(self, session: LiveCall) -> None:
        """A call went live in this process."""
        self.sessions[session.call_id] = session
        self._idle.clear()
        if self.cluster is not None:
            self.cluster.list_call(session.call_id, session.live_info())

    def state_changed(self, session: LiveCall) -> None:
        """A live call of ours changed state: keep the cluster's registry of live calls current."""
        if self.cluster is not None and session.call_id in self.sessions:
            self.cluster.list_call(session.call_id, session.live_info())

    def unregister(self, call_id: str) -> None:
        """A call ended."""
        self.sessions.pop(call_id, None)
        if not self.sessions:
            self._idle.set()
        if self.cluster is not None:
            self.cluster.list_call(call_id, None)

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no call is live in this process (True), or `timeout_s` passes (False)."""
        if not self.sessions:
            return True
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        return not self.sessions

    @property
    def worker_id(self) -> str:
        """This worker's name in listings."""
        return self.cluster.worker_id if self.cluster is not None else "local"

    def session_for_cmiuuid(self, cmiuuid: str | None) -> LiveCall | None:
        """The live call with this platform id, if it runs in this process."""
        if not cmiuuid:
            return None
        return next((s for s in self.sessions.values() if s.cmiuuid == cmiuuid), None)

    async def listing(self) -> list[dict[str, Any]]:
        """Live calls of every worker (this one alone without a cluster), oldest first."""
        calls = {call_id: {**s.live_info(), "worker": self.worker_id} for call_id, s in self.sessions.items()}
        if self.cluster is not None:
            try:
                calls = {**await self.cluster.live_calls(), **calls}
            except (RedisError, OSError) as exc:  # Redis is down: this worker's calls are all we know
                log.warning("other workers' live calls unknown (%s)", exc)
        return sorted(
            ({"call_id": call_id, **info} for call_id, info in calls.items()), key=lambda c: c["started_at"]
        )

    async def execute(self, call_id: str, command: Command) -> bool:
        """Run a command on a live call of this process (a supervisor's, or carrier news that reached
        another worker); False when the call is not live here."""
        session = self.sessions.get(call_id)
        if session is None:
            log.info("command %s for call %s: not live here", type(command).__name__, call_id)
            return False
        match command:
            case Supervise(kind, user, department):
                await session.supervise(kind, department, user)
            case News(news):
                await session.on_news(news)
            case CarrierEvent(body):
                if self.decode_event is None:
                    log.warning("a carrier event for call %s that no carrier here reads", call_id)
                    return False
                await session.on_news(self.decode_event(body))
            case Keypad(digits):
                await session.on_dtmf(digits)
            case Listen(user, remote, lease_s, renew):
                if remote:
                    self.listen.lease(call_id, lease_s)
                if not renew:
                    await session.listened(user)
        return True

    async def route(self, call_id: str, command: Command) -> str | None:
        """Run `command` on the call wherever it lives: this worker, or the owner through the cluster.
        Returns the worker that took it, or None when the call is not live anywhere."""
        if call_id in self.sessions:
            await self.execute(call_id, command)
            return self.worker_id
        if self.cluster is not None:
            try:
                return await self.cluster.send(call_id, command)
            except (RedisError, OSError) as exc:
                log.warning("command %s for call %s not sent (%s)", type(command).__name__, call_id, exc)
        return None
