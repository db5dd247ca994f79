"""Workers sharing Redis: live events from every call, one registry of live calls, commands to a
call's owner. Without `cluster.redis_url` (or with Redis down at start) a worker runs alone.

- Live events: each worker PUBLISHes its calls' events on `hotline:live` (from a bounded queue, so a
  slow or dead Redis never holds a call up: events are dropped and counted) and re-delivers the other
  workers' events to its own subscribers, so any worker's `/api/live` shows every call.
- Registry: `hotline:calls` maps each live call to its worker (bot, numbers, start); each worker keeps
  `hotline:worker:<id>` alive with a TTL, so the calls of a worker that died drop out of listings.
- Commands (agent.worker.commands): a supervisor's "transfer now"/"hang up", or carrier news that
  reached another worker, go to `hotline:cmd:<owner>`; the owner runs them on the call.
- Listen-in: a supervisor listening on another worker than the call's sends the owner a `listen`
  lease (renewed every few seconds); while it is fresh, the owner PUBLISHes the call's audio packets
  (agent.worker.listen) on `hotline:audio:<call id>`, again from a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agent.worker.bus import LiveEvent
from agent.worker.commands import Command, CommandError, Listen, from_wire, to_wire
from agent.worker.listen import END, LEASE_S, Packet

log = logging.getLogger(__name__)

LIVE = "hotline:live"
CALLS = "hotline:calls"
WORKER_KEY = "hotline:worker:{}"
COMMANDS = "hotline:cmd:{}"
AUDIO = "hotline:audio:{}"
OUTBOX_SIZE = 5000
AUDIO_OUTBOX_SIZE = 1000
Executor = Callable[[str, Command], Awaitable[object]]


def default_worker_id() -> str:
    """host-pid: unique per process, readable in listings."""
    return f"{socket.gethostname()}-{os.getpid()}"


class Cluster:
    """This worker's link to the others (see the module docstring)."""

    def __init__(
        self, redis: aioredis.Redis, worker_id: str, deliver: Callable[[LiveEvent], None], execute: Executor
    ) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self._deliver = deliver  # a remote live event → local subscribers
        self._execute = execute  # a command for one of our calls
        self._outbox: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=OUTBOX_SIZE)
        self._audio_outbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=AUDIO_OUTBOX_SIZE)
        self._registry: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.heartbeat_s = 5.0
        self.dropped = 0
        self._listed: dict[str, dict[str, Any]] = {}  # our live calls (listed again after an outage)
        self._unlisted_later: set[str] = set()  # calls that ended while the registry could not be told
        self.reachable = True
        """False from a failed heartbeat or registry write until a heartbeat succeeds again."""
        self.audio_dropped = 0

    @classmethod
    async def connect(
        cls, url: str, worker_id: str, deliver: Callable[[LiveEvent], None], execute: Executor
    ) -> Cluster | None:
        """Join the cluster; None (and a warning) when Redis cannot be reached: the worker runs alone."""
        redis = aioredis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            await redis.ping()
        except (RedisError, OSError) as exc:
            log.warning("Redis at %s unreachable (%s): running as a single worker", url, exc)
            await redis.aclose()
            return None
        cluster = cls(redis, worker_id, deliver, execute)
        await cluster._beat()
        cluster._tasks = [
            asyncio.create_task(cluster._publish_loop(), name="cluster publish"),
            asyncio.create_task(cluster._listen_loop(), name="cluster listen"),
            asyncio.create_task(cluster._heartbeat_loop(), name="cluster heartbeat"),
            asyncio.create_task(cluster._audio_loop(), name="cluster audio"),
            asyncio.create_task(cluster._registry_loop(), name="cluster registry"),
        ]
        log.info("joined the cluster at %s as worker %s", url, worker_id)
        return cluster

    async def close(self) -> None:
        """Leave: stop the loops, forget this worker's calls."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            while not self._registry.empty():  # the last unlistings (the drain ended our calls)
                call_id, info = self._registry.get_nowait()
                if info is None:
                    await self.redis.hdel(CALLS, call_id)
            await self.redis.delete(WORKER_KEY.format(self.worker_id))
        await self.redis.aclose()

    # ---------------------------------------------------------------------------- live events

    def forward(self, event: LiveEvent) -> None:
        """Send one of our events to the other workers; never waits (a full outbox drops it)."""
        try:
            self._outbox.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    async def _publish_loop(self) -> None:
        while True:
            event = await self._outbox.get()
            message = json.dumps({"worker": self.worker_id, **event.as_json()}, default=str)
            try:
                await self.redis.publish(LIVE, message)
            except (RedisError, OSError) as exc:
                self.dropped += 1
                log.warning("live event not shared (%s); the call goes on", exc)
                await asyncio.sleep(1.0)

    async def _listen_loop(self) -> None:
        mine = COMMANDS.format(self.worker_id)
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(LIVE, mine)
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._on_message(message["channel"], message["data"], mine)
            except (RedisError, OSError) as exc:
                log.warning("cluster subscription lost (%s); retrying", exc)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def _on_message(self, channel: bytes | str, data: bytes | str, mine: str) -> None:
        channel = _text(channel)
        try:
            body = json.loads(data)
        except ValueError:
            log.warning("ignored a malformed cluster message on %s", channel)
            return
        if channel == LIVE:
            if body.get("worker") != self.worker_id:
                self._deliver(LiveEvent(body["call_id"], body["kind"], body["data"], body["at"]))
        elif channel == mine:
            try:
                call_id, command = from_wire(body)
            except CommandError as exc:
                log.warning("ignored a cluster command %.200r (%s)", body, exc)
                return
            try:
                await self._execute(call_id, command)
            except Exception:
                log.exception("cluster command %s for call %s failed", type(command).__name__, call_id)

    # ------------------------------------------------------------------------------ listen-in

    def forward_audio(self, call_id: str, data: Packet) -> None:
        """Send an audio packet of one of our calls to its listeners on other workers; never waits."""
        try:
            self._audio_outbox.put_nowait((call_id, data))
        except asyncio.QueueFull:
            self.audio_dropped += 1

    async def _audio_loop(self) -> None:
        while True:
            call_id, data = await self._audio_outbox.get()
            try:
                await self.redis.publish(AUDIO.format(call_id), data)
            except (RedisError, OSError) as exc:
                self.audio_dropped += 1
                log.warning("listen-in audio not shared (%s); the call goes on", exc)
                await asyncio.sleep(1.0)

    async def listen(self, call_id: str, user: str) -> AsyncGenerator[Packet, None]:
        """Audio packets of a call another worker owns, until it ends (or stops being live)."""
        pubsub = self.redis.pubsub()
        loop = asyncio.get_running_loop()
        try:
            await pubsub.subscribe(AUDIO.format(call_id))  # before the lease: no packet is missed
            command = Listen(user, remote=True)
            if await self.send(call_id, command) is None:
                return
            renew_at = loop.time() + LEASE_S / 3
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if loop.time() >= renew_at:
                    if await self.send(call_id, Listen(user, remote=True, renew=True)) is None:
                        return  # the call (or its worker) is gone
                    renew_at = loop.time() + LEASE_S / 3
                if message is None or message.get("type") != "message":
                    continue
                data = bytes(message["data"])
                yield data
                if data[:1] == bytes([END]):
                    return
        finally:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()

    # ------------------------------------------------------------------------------- registry

    async def _beat(self) -> None:
        ttl = max(1, round(self.heartbeat_s * 3))
        await self.redis.set(WORKER_KEY.format(self.worker_id), "1", ex=ttl)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await self._beat()
            except (RedisError, OSError) as exc:
                self.reachable = False
                log.warning("cluster heartbeat failed (%s); serving our calls alone meanwhile", exc)
                continue
            if not self.reachable:  # Redis is back: what was listed while it was gone may be missing
                self.reachable = True
                log.warning("Redis is back: re-listing our %d live calls", len(self._listed))
                for call_id, info in list(self._listed.items()):
                    self._registry.put_nowait((call_id, info))  # in order with the other registry writes
                for call_id in self._unlisted_later - set(self._listed):
                    self._registry.put_nowait((call_id, None))
                self._unlisted_later.clear()

    async def worker_alive(self, worker: str) -> bool:
        """Whether a worker's heartbeat is fresh."""
        return bool(await self.redis.exists(WORKER_KEY.format(worker)))

    def list_call(self, call_id: str, info: dict[str, Any] | None) -> None:
        """List (or update) a call of ours; None unlists it. Never waits: the writes are queued and
        applied in order, so an update can never bring back a call that already ended."""
        if info is None:
            self._listed.pop(call_id, None)
        else:
            self._listed[call_id] = info
        self._registry.put_nowait((call_id, info))

    async def _registry_loop(self) -> None:
        while True:
            call_id, info = await self._registry.get()
            try:
                if info is None:
                    await self.redis.hdel(CALLS, call_id)
                else:
                    await self.redis.hset(CALLS, call_id, json.dumps({**info, "worker": self.worker_id}))
            except (RedisError, OSError) as exc:
                self.reachable = False  # the next good heartbeat lists our calls again
                if info is None:
                    self._unlisted_later.add(call_id)
                log.warning(
                    "live call %s not %s in the registry (%s)", call_id, "listed" if info else "unlisted", exc
                )

    async def live_calls(self) -> dict[str, dict[str, Any]]:
        """Every live call of every worker still alive: call id → info (with `worker`)."""
        entries = await self.redis.hgetall(CALLS)
        calls = {_text(k): json.loads(v) for k, v in entries.items()}
        workers = {c["worker"] for c in calls.values()}
        alive = {w for w in workers if await self.redis.exists(WORKER_KEY.format(w))}
        return {call_id: info for call_id, info in calls.items() if info["worker"] in alive}

    async def send(self, call_id: str, command: Command) -> str | None:
        """Hand a command to the worker that owns `call_id`; returns that worker, or None if not live."""
        raw = await self.redis.hget(CALLS, call_id)
        if raw is None:
            return None
        owner = str(json.loads(raw)["worker"])
        if not await self.redis.exists(WORKER_KEY.format(owner)):
            return None
        await self.redis.publish(COMMANDS.format(owner), json.dumps(to_wire(call_id, command)))
        return owner


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
