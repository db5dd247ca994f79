"""Commands between workers: typed here, the same JSON on the wire as the previous release's."""

from __future__ import annotations

from typing import Any

import pytest

from agent.telephony.carrier import CallNews, Dtmf, Hangup, TransferOutcome
from agent.worker.commands import (
    CarrierEvent,
    Command,
    CommandError,
    Keypad,
    Listen,
    News,
    Supervise,
    from_wire,
    to_wire,
)
from agent.worker.listen import LEASE_S, ListenHub
from agent.worker.live_calls import LiveCalls

COMMANDS: list[Command] = [
    Supervise("transfer", "bob", "sales"),
    Supervise("hangup", None),
    Keypad("42#"),
    Listen("bob"),
    Listen("bob", remote=True, lease_s=9.0, renew=True),
    News(TransferOutcome(answered=False, why="busy", line_hung_up=True), carrier_body={"status": "busy"}),
    News(Hangup()),
    News(Dtmf("7")),
    News(None, carrier_body={"status": "ringing"}),
    CarrierEvent({"status": "hangup"}),
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: type(c).__name__)
def test_every_command_reads_back_as_it_was_sent(command: Command) -> None:
    assert from_wire(to_wire("c_1", command)) == ("c_1", command)


@pytest.mark.parametrize(
    ("wire", "command"),
    [  # exactly what the previous release sends
        ({"cmd": "transfer", "department": "sales", "user": "bob"}, Supervise("transfer", "bob", "sales")),
        ({"cmd": "hangup", "user": "bob"}, Supervise("hangup", "bob")),
        ({"cmd": "dtmf", "digits": "12"}, Keypad("12")),
        ({"cmd": "listen", "user": "bob", "lease_s": LEASE_S, "remote": True}, Listen("bob", remote=True)),
        (
            {"cmd": "listen", "user": "bob", "lease_s": LEASE_S, "remote": True, "renew": True},
            Listen("bob", remote=True, renew=True),
        ),
        ({"cmd": "event", "body": {"status": "hangup"}}, CarrierEvent({"status": "hangup"})),
    ],
)
def test_the_previous_release_commands_are_understood(wire: dict[str, Any], command: Command) -> None:
    assert from_wire({**wire, "call_id": "c_1"}) == ("c_1", command)


def test_the_previous_release_reads_what_this_one_sends() -> None:
    """Old workers read `cmd`, `department`, `user`, `digits`, `remote`, `lease_s`, `renew` and an
    event's `body` (PIOPIY's own JSON)."""
    body = {"cmiuuid": "u1", "status": "answered", "leg": "b"}
    wire = to_wire("c_1", News(TransferOutcome(answered=True, why="answered"), carrier_body=body))
    assert wire["cmd"] == "event" and wire["body"] == body and wire["call_id"] == "c_1"
    assert to_wire("c_1", Supervise("transfer", "bob", "sales")) == {
        "cmd": "transfer", "department": "sales", "user": "bob", "call_id": "c_1"
    }  # fmt: skip
    assert to_wire("c_1", Keypad("5")) == {"cmd": "dtmf", "digits": "5", "call_id": "c_1"}
    listen = to_wire("c_1", Listen("bob", remote=True))
    assert listen["remote"] is True and listen["lease_s"] == LEASE_S and not listen["renew"]


@pytest.mark.parametrize(
    "wire",
    [
        "not a dict",
        {"cmd": "transfer"},  # no call id
        {"cmd": "reboot", "call_id": "c_1"},
        {"cmd": "dtmf", "call_id": "c_1"},
        {"cmd": "event", "news": {"kind": "weather"}, "call_id": "c_1"},
        {"cmd": "event", "news": {"kind": "transfer"}, "call_id": "c_1"},
        {"cmd": "listen", "lease_s": "soon", "call_id": "c_1"},
    ],
)
def test_what_is_not_a_command_is_refused(wire: Any) -> None:
    with pytest.raises(CommandError):
        from_wire(wire)


class FakeCall:
    call_id = "c_1"
    bot_name = "support_desk"
    cmiuuid = "u1"

    def __init__(self) -> None:
        self.news: list[CallNews | None] = []
        self.orders: list[tuple[str, str | None, str | None]] = []
        self.listeners: list[str | None] = []
        self.digits: list[str] = []

    def live_info(self) -> dict[str, Any]:
        return {"started_at": 1.0}

    def take_rules(self, rules: list[Any]) -> None: ...

    async def close(self, reason: str, *, dropped: bool = False) -> None: ...

    async def on_news(self, news: CallNews | None) -> None:
        self.news.append(news)

    async def on_dtmf(self, digits: str) -> None:
        self.digits.append(digits)

    async def supervise(self, kind: str, department: str | None, user: str | None) -> None:
        self.orders.append((kind, department, user))

    async def listened(self, user: str | None) -> None:
        self.listeners.append(user)


async def test_commands_reach_the_live_call() -> None:
    hub = ListenHub()
    calls = LiveCalls(hub)
    call = FakeCall()
    calls.register(call)
    assert await calls.execute("c_1", Supervise("transfer", "bob", "sales"))
    assert await calls.execute("c_1", News(Hangup()))
    assert await calls.execute("c_1", Keypad("9"))
    assert await calls.execute("c_1", Listen("ann", remote=True))
    assert await calls.execute("c_1", Listen("ann", remote=True, renew=True))
    assert call.orders == [("transfer", "sales", "bob")]
    assert call.news == [Hangup()] and call.digits == ["9"] and call.listeners == ["ann"]
    assert await calls.route("c_1", Keypad("1")) == "local" and call.digits == ["9", "1"]
    assert not await calls.execute("c_2", Keypad("1"))
    assert await calls.route("c_2", Keypad("1")) is None  # live nowhere (no cluster)


async def test_a_forwarded_carrier_event_needs_the_carrier_to_read_it() -> None:
    calls = LiveCalls(ListenHub())
    call = FakeCall()
    calls.register(call)
    assert not await calls.execute("c_1", CarrierEvent({"status": "hangup"}))
    calls.decode_event = lambda body: Hangup() if body["status"] == "hangup" else None
    assert await calls.execute("c_1", CarrierEvent({"status": "hangup"}))
    assert call.news == [Hangup()]
    calls.unregister("c_1")
    assert await calls.wait_idle(0.01) and calls.session_for_cmiuuid("u1") is None


def test_the_app_reads_the_previous_release_forwarded_piopiy_event() -> None:
    from agent.telephony.piopiy.routes import forwarded_event_news

    body = {"cmiuuid": "u1", "status": "ANSWERED", "leg": "b"}
    assert forwarded_event_news(body) == TransferOutcome(answered=True, why="answered")
    assert forwarded_event_news({"cmiuuid": "u1", "status": "hangup"}) == Hangup()
