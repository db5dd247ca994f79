"""Live events of calls (transcripts as they form, turns, barge-ins, actions), in-process.

Publishing never blocks a call: each subscriber has a bounded queue, and a subscriber that falls
behind loses its oldest events (and is told how many), never the call's time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.websockets import WebSocketDisconnect


@dataclass(frozen=True)
class LiveEvent:
    """One thing that happened on a live call."""

    call_id: str
    kind: str
    data: dict[str, Any]
    at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        """The wire shape: {call_id, kind, data, at}."""
        return asdict(self)


class Subscription:
    """A subscriber's queue; iterate it for events (optionally of one call)."""

    def __init__(self, bus: Bus, call_id: str | None, size: int) -> None:
        self._bus = bus
        self.call_id = call_id
        self.queue: asyncio.Queue[LiveEvent] = asyncio.Queue(maxsize=size)
        self.dropped = 0

    def offer(self, event: LiveEvent) -> None:
        """Queue an event, dropping the oldest when full."""
        if self.call_id is not None and event.call_id != self.call_id:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving."""
        self._bus._subscribers.discard(self)

    async def __aiter__(self) -> AsyncIterator[LiveEvent]:
        while True:
            yield await self.queue.get()


class Bus:
    """Fan-out of live events to subscribers in this process."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subscribers: set[Subscription] = set()
        self.queue_size = queue_size
        self.forward: Callable[[LiveEvent], None] | None = None
        """Also hand this process's events to other workers (agent.worker.cluster); never waits."""

    def publish(self, call_id: str, kind: str, data: dict[str, Any]) -> None:
        """Hand an event of one of our calls to every subscriber (and the other workers); never waits."""
        event = LiveEvent(call_id, kind, data)
        self.deliver(event)
        if self.forward is not None:
            self.forward(event)

    def deliver(self, event: LiveEvent) -> None:
        """Hand an event to this process's subscribers only (events of other workers' calls)."""
        for sub in list(self._subscribers):
            sub.offer(event)

    def subscribe(self, call_id: str | None = None) -> Subscription:
        """A new subscription (all calls, or one); `close()` it when done."""
        sub = Subscription(self, call_id, self.queue_size)
        self._subscribers.add(sub)
        return sub


async def relay(subscription: Subscription, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Send a subscription's events (as JSON) until the viewer leaves, then close the subscription."""
    try:
        async for event in subscription:
            await send(event.as_json())
    except (WebSocketDisconnect, RuntimeError):
        pass  # the viewer left
    finally:
        subscription.close()
