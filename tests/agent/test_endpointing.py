"""Semantic endpointing through the real service: a whole sentence ends the turn at its pause; a
caller who goes on after that is one turn, not two, and the bot takes back what it started to say."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testkit.caller_voice import caller_says
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.test_calls import call_id_of, final_record


@pytest.fixture(scope="module")
def patient_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """support_desk waiting 3 s of silence (the most a bot may) before it ends a turn by silence alone."""
    changes = {"support_desk": {"turn_taking": {"end_silence_ms": 3000}}}
    with running_service(tmp_path_factory.mktemp("patient"), bots=changes) as service:
        yield service


async def test_a_caller_who_goes_on_after_an_early_end_makes_one_turn(patient_service: Service) -> None:
    sim = PiopiySimulator(patient_service.url, webhook_secret=WEBHOOK_SECRET)
    async with await sim.place_call(to_number=SUPPORT_NUMBER) as call:
        await call.wait_until_bot_silent(quiet_s=0.8, timeout=20)
        await call.say_pcm(caller_says("Hello."), 8000)
        # Time for "Hello." to end the turn early (its speculative transcript is back within a second on a
        # quiet machine, within two on a busy one), short of the 3 s that would end it by silence.
        await call.silence(2.4)
        await call.say_pcm(caller_says("What are your opening hours?"), 8000)
        await call.wait_for_bot_audio(timeout=15, since=call.now())
        await call.wait_until_bot_silent(quiet_s=1.0, timeout=30)
        call_id = call_id_of(call.pcmo)
    record = await final_record(patient_service, call_id)
    continued = [e for e in record["events"] if (e["source"], e["status"]) == ("turns", "continued")]
    assert len(continued) == 1, record["events"]
    assert continued[0]["payload"]["first_part"].lower().startswith("hello")
    callers = [t for t in record["turns"] if t["role"] == "caller"]
    assert len(callers) == 1
    assert callers[0]["text"].lower().startswith("hello") and "opening hours" in callers[0]["text"].lower()
    assert callers[0]["latency_ms"]["early_endpoint"] is True
    bots = [t for t in record["turns"] if t["role"] == "bot"]
    assert bots[-1]["text"].startswith("Our branches are open from nine")
    # Whatever the bot began to answer to "Hello." alone was cut, never finished.
    assert all(t["interrupted"] for t in bots[1:-1])
