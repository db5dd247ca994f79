"""Listen-in: a live call's audio, caller and bot, for supervisors in the dashboard.

A call hands every chunk of audio it records to the hub (`feed`); the hub copies it to the listeners
of that call, if any, so a call nobody listens to pays one dict lookup per chunk. Each listener has a
bounded queue: a listener that falls behind loses its oldest audio, never the call's time.

Packets are what the browser receives, one per WebSocket binary message: a 4-byte header
(channel: 0 caller / 1 bot, a zero byte, the sample rate as little-endian uint16) and then the audio
as 16-bit little-endian mono PCM. The same packets travel between workers (agent.worker.cluster) when the
supervisor's dashboard runs on another worker than the call: the owner publishes them only while a
lease from such a listener is fresh.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable

CALLER, BOT = 0, 1
END = 255
"""Channel byte of the last packet of a call (no audio): the call ended."""
HEADER = struct.Struct("<BBH")
QUEUE_PACKETS = 400
"""Per listener: ~8 s of caller frames at 20 ms, more of the bot's larger chunks."""
LEASE_S = 15.0
"""How long a remote listener's lease keeps the owner publishing; renewed every LEASE_S / 3."""

Packet = bytes


def packet(channel: int, sample_rate: int, pcm: bytes = b"") -> Packet:
    """One listen-in packet (see the module docstring)."""
    return HEADER.pack(channel, 0, sample_rate) + pcm


def unpack(data: bytes) -> tuple[int, int, bytes]:
    """(channel, sample rate, pcm) of a packet; ValueError when it is not one."""
    if len(data) < HEADER.size:
        raise ValueError(f"a listen-in packet has a {HEADER.size}-byte header, got {len(data)} bytes")
    channel, _, rate = HEADER.unpack_from(data)
    if channel not in (CALLER, BOT, END) or rate not in (8000, 16000):
        raise ValueError(f"not a listen-in packet (channel {channel}, rate {rate})")
    return channel, rate, data[HEADER.size :]


class Listener:
    """One supervisor's ear on one call: iterate it for packets until the call ends."""

    def __init__(self, hub: ListenHub, call_id: str) -> None:
        self._hub = hub
        self.call_id = call_id
        self.queue: asyncio.Queue[Packet] = asyncio.Queue(maxsize=QUEUE_PACKETS)
        self.dropped = 0

    def offer(self, data: Packet) -> None:
        """Queue a packet, dropping the oldest when full (an END packet is always kept)."""
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(data)

    def close(self) -> None:
        """Stop listening."""
        self._hub._remove(self)

    async def __aiter__(self) -> AsyncIterator[Packet]:
        while True:
            data = await self.queue.get()
            yield data
            if data[0] == END:
                return


class ListenHub:
    """This process's listen-in fan-out (see the module docstring)."""

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._leases: dict[str, float] = {}  # call id → monotonic time a remote listener's lease ends
        self.remote: Callable[[str, Packet], None] | None = None
        """Publishes our calls' packets to listeners on other workers (agent.worker.cluster); never waits."""

    def listen(self, call_id: str) -> Listener:
        """A new listener on a call of this process, or a relay of one on another worker."""
        listener = Listener(self, call_id)
        self._listeners.setdefault(call_id, set()).add(listener)
        return listener

    def _remove(self, listener: Listener) -> None:
        listeners = self._listeners.get(listener.call_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[listener.call_id]

    def lease(self, call_id: str, seconds: float = LEASE_S) -> None:
        """A listener on another worker wants this call's audio for the next `seconds`."""
        self._leases[call_id] = time.monotonic() + seconds

    def listening(self, call_id: str) -> int:
        """How many listeners this process has on a call (remote leases not counted)."""
        return len(self._listeners.get(call_id, ()))

    def feed(self, call_id: str, channel: int, sample_rate: int, pcm: bytes) -> None:
        """Audio of one of our calls (from the call's own task); never waits."""
        listeners = self._listeners.get(call_id)
        lease = self._leases.get(call_id)
        if not listeners and lease is None:
            return
        data = packet(channel, sample_rate, pcm)
        self.deliver(call_id, data)
        if lease is not None:
            if lease < time.monotonic():
                del self._leases[call_id]
            elif self.remote is not None:
                self.remote(call_id, data)

    def deliver(self, call_id: str, data: Packet) -> None:
        """Hand a packet to this process's listeners of the call (also packets from other workers)."""
        for listener in list(self._listeners.get(call_id, ())):
            listener.offer(data)

    def ended(self, call_id: str, sample_rate: int) -> None:
        """A call of ours ended: its listeners, here and on other workers, get the END packet."""
        end = packet(END, sample_rate)
        self.deliver(call_id, end)
        if self._leases.pop(call_id, None) is not None and self.remote is not None:
            self.remote(call_id, end)
