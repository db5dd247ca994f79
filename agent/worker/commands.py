"""Orders for a live call (a supervisor's, or carrier news that reached another worker), typed, and their
JSON on the wire between workers (`hotline:cmd:<worker>`), which stays what earlier releases send.

Wire shapes: {"cmd": "transfer" | "hangup", "department"?, "user"?}, {"cmd": "dtmf", "digits"},
{"cmd": "listen", "user"?, "remote"?, "lease_s"?, "renew"?}, {"cmd": "event", "news", "body"}; each
with "call_id" beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from agent.telephony.carrier import CallNews, Dtmf, Hangup, TransferOutcome
from agent.worker.listen import LEASE_S


class CommandError(ValueError):
    """A command from the wire that this worker does not understand."""


@dataclass(frozen=True)
class Supervise:
    """A supervisor's "transfer now" (to one of the bot's departments) or "hang up"."""

    kind: Literal["transfer", "hangup"]
    user: str | None = None
    department: str | None = None


@dataclass(frozen=True)
class Keypad:
    """Keypad digits the carrier reported to another worker than the call's."""

    digits: str


@dataclass(frozen=True)
class Listen:
    """A supervisor listens in; `remote`: from another worker, which holds a lease it renews."""

    user: str | None = None
    remote: bool = False
    lease_s: float = LEASE_S
    renew: bool = False


@dataclass(frozen=True)
class News:
    """What the carrier reported about the call (its webhook reached another worker), already neutral."""

    news: CallNews | None
    carrier_body: Any = None
    """The carrier's event as it came: workers of the previous release read only this (drop it after)."""


@dataclass(frozen=True)
class CarrierEvent:
    """The previous release's forwarded event: the carrier's body alone (the app decodes it)."""

    body: Any


Command = Supervise | Keypad | Listen | News | CarrierEvent


def to_wire(call_id: str, command: Command) -> dict[str, Any]:
    """The JSON another worker reads (this release's or the previous one's)."""
    match command:
        case Supervise(kind, user, department):
            wire: dict[str, Any] = {"cmd": kind, "department": department, "user": user}
        case Keypad(digits):
            wire = {"cmd": "dtmf", "digits": digits}
        case Listen(user, remote, lease_s, renew):
            wire = {"cmd": "listen", "user": user, "lease_s": lease_s, "remote": remote, "renew": renew}
        case News(news, carrier_body):
            wire = {"cmd": "event", "news": news_to_json(news), "body": carrier_body}
        case CarrierEvent(body):
            wire = {"cmd": "event", "body": body}
    return {**wire, "call_id": call_id}


def from_wire(body: Any) -> tuple[str, Command]:
    """The call id and command of a message on the wire; CommandError when it is not one."""
    try:
        return _from_wire(body)
    except (KeyError, TypeError, ValueError) as exc:  # CommandError is a ValueError too
        raise CommandError(str(exc)) from None


def _from_wire(body: Any) -> tuple[str, Command]:
    if not isinstance(body, dict) or not isinstance(body.get("call_id"), str):
        raise CommandError("not a command for a call")
    call_id, cmd = body["call_id"], body.get("cmd")
    user = _optional_str(body.get("user"))
    match cmd:
        case "transfer" | "hangup":
            return call_id, Supervise(cmd, user, _optional_str(body.get("department")))
        case "dtmf":
            return call_id, Keypad(str(body["digits"]))
        case "listen":
            lease_s = float(body.get("lease_s") or LEASE_S)
            return call_id, Listen(user, bool(body.get("remote")), lease_s, bool(body.get("renew")))
        case "event" if "news" in body:
            return call_id, News(news_from_json(body["news"]), body.get("body"))
        case "event":
            return call_id, CarrierEvent(body.get("body"))
    raise CommandError(f"unknown command {cmd!r}")


def news_to_json(news: CallNews | None) -> dict[str, Any] | None:
    """Carrier-neutral news as JSON."""
    match news:
        case None:
            return None
        case Dtmf(digits):
            return {"kind": "dtmf", "digits": digits}
        case Hangup():
            return {"kind": "hangup"}
        case TransferOutcome(answered, why, line_hung_up):
            return {"kind": "transfer", "answered": answered, "why": why, "line_hung_up": line_hung_up}


def news_from_json(data: Any) -> CallNews | None:
    """News read back from `news_to_json`'s JSON; CommandError for anything else."""
    if data is None:
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    match kind:
        case "dtmf":
            return Dtmf(str(data["digits"]))
        case "hangup":
            return Hangup()
        case "transfer":
            return TransferOutcome(bool(data["answered"]), str(data["why"]), bool(data.get("line_hung_up")))
    raise CommandError(f"unknown news {kind!r}")


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
