"""CallObserver: one event in, each of its sinks written (record, live feed, Prometheus, signal counters)."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from agent.call import events as ev
from agent.call.observer import CallObserver
from agent.call.state import CallState
from agent.dialogue.scripted import IntentMatcher
from agent.escalation.signals import SignalTracker
from agent.records.call_record import CallRecord
from agent.worker.metrics import Metrics

BOT = "desk"


class RecordSink:
    """A CallRecord that keeps what it was asked to write."""

    def __init__(self) -> None:
        self.call_id = "c_1"
        self.cmiuuid: str | None = None
        self.recent: deque[dict[str, str]] = deque()
        self.writes: list[tuple[Any, ...]] = []
        self._turns = 0

    def next_turn(self) -> int:
        self._turns += 1
        return self._turns - 1

    async def event(self, source: str, status: str, payload: Any) -> None:
        self.writes.append(("event", source, status, payload))

    async def action(self, kind: str, payload: Any, reason: Any) -> None:
        self.writes.append(("action", kind, payload, reason))

    async def add_turn(self, idx: int | None, role: str, text: str, started_at: float, **fields: Any) -> None:
        self.writes.append(("turn", idx, role, text, fields))

    async def update_turn(self, turn_id: int | None, **fields: Any) -> None:
        self.writes.append(("update_turn", turn_id, fields))

    async def update(self, **fields: Any) -> None:
        self.writes.append(("update", fields))

    async def merge_meta(self, **fields: Any) -> None:
        self.writes.append(("meta", fields))


class Sinks:
    def __init__(self) -> None:
        self.record = RecordSink()
        self.live: list[tuple[str, dict[str, Any]]] = []
        self.metrics = Metrics()
        self.signals = SignalTracker(IntentMatcher([]))
        self.registry_updates = 0

        def publish(call_id: str, kind: str, data: dict[str, Any]) -> None:
            assert call_id == "c_1"
            self.live.append((kind, data))

        def listed() -> None:
            self.registry_updates += 1

        self.observer = CallObserver(
            cast(CallRecord, self.record), publish, self.metrics, self.signals, bot_name=BOT, on_state=listed
        )

    def metric(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, {"bot": BOT, **labels})


async def test_a_barge_in_is_counted_written_published_and_measured() -> None:
    s = Sinks()
    await s.observer.emit(ev.BargeIn(onset_ms=1200, detected_after_ms=180))
    assert s.signals.counters["barge_ins"] == 1
    assert s.record.writes == [("event", "turns", "barge_in", {"onset_ms": 1200, "detected_after_ms": 180})]
    assert s.live == [("barge_in", {"onset_ms": 1200, "detected_after_ms": 180})]
    assert s.metric("hotline_barge_ins_total") == 1


async def test_a_caller_turn_keeps_its_latency_in_the_record_shape() -> None:
    s = Sinks()
    latency = ev.TurnLatency(endpoint=ev.EndpointLatency(600, False, 120, 40, True))
    await s.observer.emit(ev.CallerTurn(s.observer.next_turn(), "hello", 1.0, 2.0, latency))
    shape = {"endpoint_ms": 600, "early_endpoint": False, "asr_ms": 120, "asr_wait_ms": 40,
             "asr_speculative_hit": True}  # fmt: skip
    assert s.record.writes == [("turn", 0, "caller", "hello", {"ended_at": 2.0, "latency": shape})]
    assert list(s.record.writes[0][4]["latency"]) == list(shape)  # stored as JSON: the key order too
    assert s.live == [("turn", {"role": "caller", "text": "hello", "latency_ms": shape, "continued": False})]
    assert s.metric("hotline_endpoint_seconds_count") == 1
    assert s.metric("hotline_response_seconds_count") is None  # not answered yet

    answered = ev.TurnLatency(endpoint=latency.endpoint, answer=ev.AnswerLatency(None, 12.5, 900))
    await s.observer.emit(ev.TurnAnswered(0, answered))
    complete = {**shape, "dialogue_first_text_ms": None, "tts_first_audio_ms": 12.5, "response_ms": 900}
    assert s.record.writes[-1] == ("update_turn", 0, {"latency": complete})
    assert s.metric("hotline_response_seconds_count") == 1
    assert s.metric("hotline_endpoint_seconds_count") == 1  # the endpoint was measured once, with the turn


async def test_a_keypad_turn_says_where_it_came_from() -> None:
    assert ev.TurnLatency(source="dtmf", answer=ev.AnswerLatency(5, None, 30)).as_dict() == {
        "source": "dtmf", "dialogue_first_text_ms": 5, "tts_first_audio_ms": None, "response_ms": 30,
    }  # fmt: skip


async def test_a_failed_transfer_reaches_every_sink() -> None:
    s = Sinks()
    await s.observer.emit(ev.TransferFailed("billing", "busy"))
    assert s.signals.counters["transfer_failures"] == 1
    assert s.record.writes == [("event", "transfer", "failed", {"department": "billing", "why": "busy"})]
    assert s.live == [("transfer.failed", {"department": "billing", "why": "busy"})]
    assert s.metric("hotline_errors_total", stage="transfer", kind="busy") == 1


async def test_a_transfer_is_an_action_with_its_rule() -> None:
    s = Sinks()
    reason = {"rule": "angry", "department": "billing"}
    await s.observer.emit(ev.TransferStarted("pcmo", {"action": "bridge"}, reason, "billing"))
    assert s.record.writes == [("action", "pcmo", {"action": "bridge"}, reason)]
    assert s.live == [("action", {"type": "pcmo", "payload": {"action": "bridge"}, "reason": reason})]
    assert s.metric("hotline_transfers_total", department="billing", rule="angry") == 1


async def test_a_silence_timeout_is_counted_before_it_is_written() -> None:
    s = Sinks()
    await s.observer.emit(ev.SilenceTimeout())
    await s.observer.emit(ev.SilenceTimeout())
    assert s.record.writes[-1] == ("event", "turns", "silence_timeout", {"count": 2})
    assert s.live == []


async def test_dialogue_failures_count_once_whatever_failed() -> None:
    s = Sinks()
    await s.observer.emit(ev.DialogueFailed("hi", "timeout", ""))
    await s.observer.emit(ev.AsrFailed("OSError", "disk", fallback=True))
    await s.observer.emit(ev.AsrFailed("OSError", "disk", fallback=False))  # nobody hears a fallback
    assert s.signals.counters["dialogue_failures"] == 2
    assert ("dialogue.failure", {"reason": "timeout"}) in s.live
    assert s.metric("hotline_errors_total", stage="asr", kind="failure") == 2


async def test_the_state_shown_reaches_the_live_feed_and_the_registry_only() -> None:
    s = Sinks()
    s.observer.notice(ev.StateChanged(CallState.CONNECTING, CallState.GREETING))
    s.observer.notice(ev.StateChanged(CallState.GREETING, CallState.TAKEN_OVER))  # never shown
    assert s.live == [("state", {"state": "greeting"})]
    assert s.registry_updates == 1
    assert s.record.writes == []


async def test_the_bots_turn_is_written_then_shown_with_what_was_heard() -> None:
    s = Sinks()
    await s.observer.emit(ev.BotTurnStarted(3, "We open at nine.", 1.0))
    await s.observer.emit(ev.BotTurnEnded(3, "We open at nine.", 2.0, interrupted=True, heard="We open"))
    assert s.record.writes == [
        ("turn", 3, "bot", "We open at nine.", {}),
        ("update_turn", 3, {"text": "We open at nine.", "ended_at": 2.0, "interrupted": True,
                            "heard_text": "We open"}),
    ]  # fmt: skip
    assert s.live == [("turn", {"role": "bot", "text": "We open at nine.", "turn_id": 3, "interrupted": True,
                                "heard_text": "We open"})]  # fmt: skip


async def test_a_closed_call_is_saved_and_counted() -> None:
    s = Sinks()
    closed = ev.CallClosed(
        "socket_closed_1000", False, "caller_hangup", "transferred", "completed", 5.0, None
    )
    await s.observer.emit(closed)
    assert s.record.writes == [
        ("event", "stream", "closed", {"reason": "socket_closed_1000", "dropped": False}),
        ("update", {"status": "completed", "end_reason": "caller_hangup", "ended_at": 5.0}),
    ]
    assert s.metric("hotline_calls_total", outcome="transferred") == 1
    s.observer.notice(ev.CallEnded("caller_hangup"))
    assert s.live == [("call.ended", {"reason": "caller_hangup"})]
