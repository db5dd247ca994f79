"""PIOPIY as a carrier link: its stream frames, PCMO actions and event statuses behind `CarrierLink`."""

from __future__ import annotations

import asyncio
import logging

from agent.config.bot import Department
from agent.telephony.carrier import Audio, Hangup, Inbound, Junk, Metadata, SendText, Sent, TransferOutcome
from agent.telephony.piopiy.codec import (
    Pcmo,
    StreamDecoder,
    StreamMetadata,
    bridge_action,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
    hangup_action,
    play_action,
)
from agent.telephony.piopiy.webhooks import CallEvent

log = logging.getLogger(__name__)

ANSWERED = frozenset({"out_answered", "out_bridged", "answered"})
"""Leg-b event statuses that say a transfer was answered."""
FAILED = frozenset({"hangup", "missed", "busy", "failed", "no_answer", "noanswer", "rejected"})
"""Leg-b event statuses that say a transfer failed."""


class PiopiyLink:
    """One call's PIOPIY stream socket, seen as a `CarrierLink`."""

    def __init__(self, send_text: SendText, sample_rate: int, *, call_id: str) -> None:
        self._send_text = send_text
        self.sample_rate = sample_rate
        self.call_id = call_id
        self._decoder = StreamDecoder()
        self._lock = asyncio.Lock()  # one frame at a time on the socket
        self._open = True

    @property
    def open(self) -> bool:
        """The socket still takes frames."""
        return self._open

    def decode(self, message: bytes | str) -> Inbound:
        """A binary frame is L16 audio (an odd last byte waits for the next); a text frame is metadata
        (a call UUID or JSON) or junk."""
        if isinstance(message, bytes):
            return Audio(self._decoder.feed_bytes(message))
        text = self._decoder.feed_text(message)
        if isinstance(text, StreamMetadata):
            return Metadata(text.call_uuid, text.data, text.size)
        return Junk(text.text, text.size)

    async def send_audio(self, pcm: bytes) -> None:
        """A `streamAudio` frame: PIOPIY queues it for playback."""
        await self._send(encode_stream_audio(pcm, self.sample_rate))

    async def clear(self) -> None:
        """`break`: PIOPIY drops what it is playing and what it has queued."""
        await self._send(encode_control("break"))

    async def transfer(self, department: Department, *, caller_id: str) -> Sent:
        """A bridge PCMO to the department's numbers (ring type, timeout, loop from its YAML)."""
        bridge = bridge_action(
            caller_id, department.numbers, timeout=department.timeout, loop=department.loop,
            ring_type=department.ring_type,
        )  # fmt: skip
        return await self._pcmo([bridge])

    async def hangup(self) -> Sent:
        """A hangup PCMO."""
        return await self._pcmo([hangup_action()])

    async def play(self, url: str) -> Sent:
        """A play PCMO (hold music)."""
        return await self._pcmo([play_action(url)])

    def close(self) -> None:
        """Nothing more is sent."""
        self._open = False

    async def _pcmo(self, actions: Pcmo) -> Sent:
        await self._send(encode_pcmo(actions))
        return Sent("pcmo", actions)

    async def _send(self, text: str) -> None:
        if not self._open:
            return
        async with self._lock:
            try:
                await self._send_text(text)
            except Exception as exc:  # the peer went away; the receive loop will end the call
                log.info("call %s: send failed (%s); socket considered closed", self.call_id, exc)
                self._open = False


def call_news(event: CallEvent) -> Hangup | TransferOutcome | None:
    """What a PIOPIY event says about the call: leg b tells a transfer's fate; a hangup ends the line."""
    status = event.status_lower
    if event.leg == "b" and status in ANSWERED:
        return TransferOutcome(answered=True, why="answered")
    if event.leg == "b" and status in FAILED:
        return TransferOutcome(answered=False, why=status, line_hung_up=status == "hangup")
    if status == "hangup":
        return Hangup()
    return None
