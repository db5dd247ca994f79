"""Listen-in's fan-out: packets, bounded queues, leases for listeners on other workers, the end."""

from __future__ import annotations

import asyncio

import pytest

from agent.worker.listen import BOT, CALLER, END, QUEUE_PACKETS, ListenHub, packet, unpack


def test_packets_carry_channel_rate_and_audio() -> None:
    data = packet(BOT, 16000, b"\x01\x00\xff\x7f")
    assert data[:4] == b"\x01\x00\x80\x3e" and unpack(data) == (BOT, 16000, b"\x01\x00\xff\x7f")
    for junk in (b"", b"\x00\x00", packet(7, 8000), b"\x00\x00\x10\x00"):
        with pytest.raises(ValueError, match="listen-in packet"):
            unpack(junk)


async def test_only_listeners_of_the_call_hear_it_and_the_end_closes_them() -> None:
    hub = ListenHub()
    sent: list[tuple[str, bytes]] = []
    hub.remote = lambda call_id, data: sent.append((call_id, data))
    hub.feed("c1", CALLER, 8000, b"\x00\x01")  # nobody listens: nothing happens, nothing is shared
    ear, other = hub.listen("c1"), hub.listen("c2")
    hub.feed("c1", CALLER, 8000, b"\x00\x02")
    hub.feed("c1", BOT, 8000, b"\x00\x03")
    hub.ended("c1", 8000)
    heard = [unpack(p) async for p in ear]
    assert heard == [(CALLER, 8000, b"\x00\x02"), (BOT, 8000, b"\x00\x03"), (END, 8000, b"")]
    assert other.queue.empty() and sent == []  # no lease: no remote copies
    ear.close()
    assert hub.listening("c1") == 0 and hub.listening("c2") == 1


async def test_a_slow_listener_loses_its_oldest_audio_never_the_end() -> None:
    hub = ListenHub()
    ear = hub.listen("c1")
    for i in range(QUEUE_PACKETS + 10):
        hub.feed("c1", CALLER, 8000, i.to_bytes(2, "little"))
    hub.ended("c1", 8000)
    heard = [unpack(p) async for p in ear]
    assert ear.dropped == 11 and heard[-1][0] == END
    assert heard[0][2] == (11).to_bytes(2, "little")  # the oldest went first


async def test_a_lease_shares_audio_with_other_workers_until_it_runs_out() -> None:
    hub = ListenHub()
    sent: list[tuple[str, bytes]] = []
    hub.remote = lambda call_id, data: sent.append((call_id, data))
    hub.lease("c1", 0.2)
    hub.feed("c1", CALLER, 8000, b"\x00\x01")
    assert sent == [("c1", packet(CALLER, 8000, b"\x00\x01"))]
    await asyncio.sleep(0.25)
    hub.feed("c1", CALLER, 8000, b"\x00\x02")  # expired: dropped from the leases
    hub.feed("c1", CALLER, 8000, b"\x00\x03")
    assert len(sent) == 1
    hub.lease("c1")
    hub.ended("c1", 8000)  # a remote listener is told the call ended
    assert sent[-1] == ("c1", packet(END, 8000))
    hub.feed("c9", CALLER, 8000, b"\x00" * 320)  # nobody listens to c9, here or elsewhere
    assert len(sent) == 2 and hub.listening("c9") == 0
