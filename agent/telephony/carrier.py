"""The carrier-neutral link a call talks to: what the carrier sent, decoded, and what the call asks of it.

A carrier (PIOPIY today: agent/telephony/piopiy/link.py) implements `CarrierLink`; the call sees only
the values and methods here, never the carrier's frames, verbs or event statuses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.config.bot import Department


@dataclass(frozen=True)
class Audio:
    """Caller audio: whole 16-bit samples at the call rate (possibly empty)."""

    pcm: bytes


@dataclass(frozen=True)
class Metadata:
    """The carrier said which call this is, and maybe more about it."""

    call_uuid: str | None
    data: dict[str, Any] = field(default_factory=dict)
    size: int = 0
    """The message's length in UTF-8 bytes (records keep a bounded amount of text)."""


@dataclass(frozen=True)
class Junk:
    """A text message the carrier should not have sent: logged and kept, never fatal."""

    text: str
    size: int = 0


@dataclass(frozen=True)
class Dtmf:
    """Keypad digits the caller pressed."""

    digits: str


@dataclass(frozen=True)
class Hangup:
    """The caller's line hung up."""


@dataclass(frozen=True)
class TransferOutcome:
    """How a transfer ended: a person answered, or it failed (`why`: the carrier's reason, lower-case)."""

    answered: bool
    why: str
    line_hung_up: bool = False
    """The same news also says the line hung up (a hang-up that came with no transfer in flight)."""


Inbound = Audio | Metadata | Junk
"""What arrives on the stream itself."""

CallNews = Dtmf | Hangup | TransferOutcome
"""What the carrier reports about the call beside the stream (its webhooks)."""


@dataclass(frozen=True)
class Sent:
    """What a link sent for an action, for the call's record and live view (`kind` names the carrier's
    own instruction format, e.g. "pcmo")."""

    kind: str
    payload: Any


SendText = Callable[[str], Awaitable[None]]
"""Sends one text frame on the call's socket."""


class LinkFactory(Protocol):
    """How a carrier makes the link of one call on its stream socket."""

    def __call__(self, send_text: SendText, sample_rate: int, *, call_id: str) -> CarrierLink: ...


class CarrierLink(Protocol):
    """One call's connection to its carrier."""

    @property
    def open(self) -> bool:
        """The carrier can still be reached (False once a send failed or the call closed)."""
        ...

    def decode(self, message: bytes | str) -> Inbound:
        """One stream message, carrier-neutral."""
        ...

    async def send_audio(self, pcm: bytes) -> None:
        """Queue bot audio (16-bit at the call rate) for playback."""
        ...

    async def clear(self) -> None:
        """Stop what is playing and drop what is queued (barge-in)."""
        ...

    async def transfer(self, department: Department, *, caller_id: str) -> Sent:
        """Bridge the caller to a department's numbers, showing `caller_id`."""
        ...

    async def hangup(self) -> Sent:
        """End the call."""
        ...

    async def play(self, url: str) -> Sent:
        """Play an audio file (hold music) to the caller."""
        ...

    def close(self) -> None:
        """The call ended: send nothing more."""
        ...
