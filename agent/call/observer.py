"""CallObserver: the one place a call's events become its record, live feed, metrics and signal counters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.call import events as ev
from agent.call.events import CallEvent
from agent.escalation.signals import SignalTracker
from agent.records.call_record import CallRecord
from agent.worker.metrics import Metrics

Publish = Callable[[str, str, dict[str, Any]], None]
"""The live bus's publish(call_id, kind, data)."""


class CallObserver:
    """Writes each event of one call to the sinks it belongs in (see `emit`)."""

    def __init__(
        self,
        record: CallRecord,
        publish: Publish,
        metrics: Metrics,
        signals: SignalTracker,
        *,
        bot_name: str,
        on_state: Callable[[], None] = lambda: None,
    ) -> None:
        self.record = record
        self._publish = publish
        self.metrics = metrics
        self.signals = signals
        self.bot_name = bot_name
        self._on_state = on_state  # the process's registry of live calls follows the state

    @property
    def call_id(self) -> str:
        """The call it writes about."""
        return self.record.call_id

    def next_turn(self) -> int:
        """The id of the call's next turn (events about it carry it)."""
        return self.record.next_turn()

    def _live(self, kind: str, **data: Any) -> None:
        self._publish(self.record.call_id, kind, data)

    def notice(self, event: CallEvent) -> None:
        """The parts of an event that never wait: signal counters, Prometheus, the live feed."""
        m, bot = self.metrics, self.bot_name
        match event:
            case ev.StateChanged(state=state) if state.shown:
                self._live("state", state=str(state))
                self._on_state()
            case ev.CallStarted(bot=b, caller=caller, called=called):
                self._live("call.started", bot=b, caller=caller, called=called)
            case ev.CallEnded(reason=reason):
                self._live("call.ended", reason=reason)
            case ev.CallClosed(outcome=outcome):
                m.call_ended(bot, outcome)
            case ev.RecordingStopped():
                m.error(bot, "recording", "write_failed")
            case ev.SpeechBegan(onset_ms=onset):
                self._live("speech.started", onset_ms=onset)
            case ev.PartialTranscript(text=text, asr_ms=ms):
                self._live("transcript.partial", text=text, asr_ms=ms)
            case ev.BargeIn(onset_ms=onset, detected_after_ms=after):
                self.signals.count("barge_ins")
                m.barge_in(bot)
                self._live("barge_in", onset_ms=onset, detected_after_ms=after)
            case ev.CallerTurn(text=text, latency=latency, continued=continued):
                latency_ms = latency.as_dict()
                self._live(
                    "turn", role="caller", text=text, latency_ms=latency_ms, continued=continued is not None
                )
                m.turn_latency(bot, latency_ms)  # endpoint and ASR (the answer: TurnAnswered)
            case ev.KeypadTurn(text=text):
                self._live("turn", role="caller", text=text, dtmf=True)
            case ev.MonitorTurn(text=text, shown=True):
                self._live("turn", role="caller", text=text, monitor=True)
            case ev.TurnInterpreted():
                self._live(
                    "turn", role="caller", text=event.text, monitor=True, turn_id=event.turn_id,
                    language=event.language, translation=event.translation,
                    interpretation=event.interpretation,
                )  # fmt: skip
            case ev.TurnSignalsRead(turn_id=turn_id, signals=signals):
                self._live("signals", turn_id=turn_id, **signals)
            case ev.TurnAnswered(latency=latency) if latency.answer is not None:
                m.turn_latency(bot, vars(latency.answer))
            case ev.AsrRejected(rejected=rejected):
                m.error(bot, "asr", str(rejected or "empty"))
            case ev.AsrFailed(fallback=fallback):
                m.error(bot, "asr", "failure")
                if fallback:
                    self.signals.count("dialogue_failures")
            case ev.LanguageChanged(detection=detection, reply_language=reply):
                self.signals.language = detection["language"]
                self.signals.language_probability = detection["probability"]
                self.signals.language_supported = detection["supported"]
                self._live("language", **detection, reply_language=reply)
            case ev.SilenceTimeout():
                self.signals.count("silence_timeouts")
            case ev.BotTurnEnded(turn_id=turn_id) if turn_id is not None:
                heard = {"heard_text": event.heard} if event.interrupted else {}
                self._live(
                    "turn",
                    role="bot",
                    text=event.said,
                    turn_id=turn_id,
                    interrupted=event.interrupted,
                    **heard,
                )  # the live view shows the bot's side of the conversation too
            case ev.DialogueFailed(reason=reason):
                self.signals.count("dialogue_failures")
                self._live("dialogue.failure", reason=reason)
                m.error(bot, "dialogue", reason)
            case ev.ToolFailed(tool=tool, kind=kind):
                self.signals.count("tool_failures")
                self._live("tool.failure", tool=tool, error=kind)
                m.error(bot, "tool", kind)
            case ev.RuleFired(reason=reason):
                self._live("escalation", **reason)
            case ev.TransferStarted(kind=kind, payload=payload, reason=reason, department=department):
                self._live("action", type=kind, payload=payload, reason=reason)
                m.transfer(bot, department, reason)
            case ev.ActionSent(kind=kind, payload=payload, reason=reason):
                self._live("action", type=kind, payload=payload, reason=reason)
            case ev.TransferAnswered(department=department):
                self._live("transfer.answered", department=department)
            case ev.TransferFailed(department=department, why=why):
                self.signals.count("transfer_failures")
                self._live("transfer.failed", department=department, why=why)
                m.error(bot, "transfer", why)
            case ev.SupervisorOrder(action=action, department=department, reason=reason):
                self._live("supervisor", action=action, department=department, user=reason["user"])
            case ev.SupervisorListening(user=user):
                self._live("supervisor", action="listen", department=None, user=user)
            case ev.Tagged(added=added, tags=tags, reason=reason):
                self._live("tags", tags=tags, added=added, reason=reason)
            case ev.NotifyMissing():
                m.error(bot, "notify", "no_such_webhook")
            case ev.NotifyDelivered(delivery=delivery, ok=ok, status=status):
                self._live("notify", **delivery)
                if not ok:
                    m.error(bot, "notify", f"http_{status}" if status else "unreachable")

    async def emit(self, event: CallEvent) -> None:
        """Write an event down everywhere it belongs: the record first (a live view that sees the event
        finds it in the record), then `notice`'s sinks."""
        r = self.record
        match event:
            case ev.CallStarted(sample_rate=rate):
                await r.event("stream", "connected", {"sample_rate": rate})
            case ev.NoAudio(ms=ms):
                await r.event("stream", "no_audio", {"ms": ms, "counted_as": "silence"})
            case ev.CarrierIdKnown(cmiuuid=cmiuuid):
                r.cmiuuid = cmiuuid
                await r.update(cmiuuid=cmiuuid)
            case ev.TextFrameKept(status=status, payload=payload):
                await r.event("stream", status, payload)
            case ev.RecordingFailed(error=error, at_s=at_s):
                await r.event("recording", "failed", {"error": error, "at_s": at_s})
            case ev.TextTruncated(summary=summary):
                await r.event("stream", "text_truncated", summary)
            case ev.CallClosed():
                await r.event("stream", "closed", {"reason": event.reason, "dropped": event.dropped})
                ended = {"recording_path": event.recording_path} if event.recording_path else {}
                await r.update(
                    status=event.status, end_reason=event.end_reason, ended_at=event.ended_at, **ended
                )
            case ev.CallerHungUpLate():
                await r.update(end_reason="caller_hangup")
            case ev.Dtmf(digits=digits):
                await r.event("dtmf", "digits", {"dtmf": digits})
            case ev.BargeIn(onset_ms=onset, detected_after_ms=after):
                self.notice(event)  # counted before it is written, as the rules see it
                await r.event("turns", "barge_in", {"onset_ms": onset, "detected_after_ms": after})
                return
            case ev.CallerTurn(turn_id=turn_id, text=text, continued=continued) if continued is not None:
                # One turn said in two parts: the record keeps one caller turn.
                await r.update_turn(
                    turn_id, text=text, ended_at=event.ended_at, latency=event.latency.as_dict()
                )
                await r.event("turns", "continued", {"first_part": continued, "text": text})
            case ev.CallerTurn(turn_id=turn_id, text=text):
                latency_ms = event.latency.as_dict()
                await r.add_turn(
                    turn_id, "caller", text, event.started_at, ended_at=event.ended_at, latency=latency_ms
                )
            case ev.KeypadTurn(turn_id=turn_id, text=text, at=at):
                await r.add_turn(turn_id, "caller", text, at, ended_at=at, latency=event.latency.as_dict())
            case ev.MonitorTurn(turn_id=turn_id, text=text):
                await r.add_turn(turn_id, "caller", text, event.started_at, ended_at=event.ended_at)
            case ev.TurnInterpreted(turn_id=turn_id, language=language, interpretation=interpretation):
                # Kept in the turn's signals column (no schema change); the record shows it as `translation`.
                await r.update_turn(turn_id, signals={"language": language, "translation": interpretation})
            case ev.TurnSignalsRead(turn_id=turn_id, signals=signals):
                await r.update_turn(turn_id, signals=signals)
            case ev.TurnAnswered(turn_id=turn_id, latency=latency):
                await r.update_turn(turn_id, latency=latency.as_dict())
            case ev.TurnUnanswered(turn_id=turn_id, text=text, why=why):
                await r.event("turns", "unanswered", {"turn_id": turn_id, "text": text, "why": why})
            case ev.Backchannel(text=text, resumed=resumed):
                await r.event("turns", "backchannel", {"text": text, "resumed": resumed})
            case ev.AsrRejected(rejected=rejected, detail=detail):
                await r.event("asr", "rejected", {"reason": str(rejected), "detail": detail})
            case ev.AsrFailed(error=error, detail=detail):
                await r.event("asr", "failure", {"error": error, "detail": detail})
            case ev.LanguageChanged(detection=detection, reply_language=reply):
                self.notice(event)  # the rules see the language as soon as it is pinned
                await r.event("asr", "language", {**detection, "reply_language": reply})
                await r.merge_meta(language=detection["language"])
                return
            case ev.SilenceTimeout():
                self.notice(event)  # the record says which timeout this is
                await r.event(
                    "turns", "silence_timeout", {"count": self.signals.counters["silence_timeouts"]}
                )
                return
            case ev.BotTurnStarted(turn_id=turn_id, text=text, at=at):
                await r.add_turn(turn_id, "bot", text, at)
            case ev.BotTurnEnded(turn_id=turn_id):
                fields: dict[str, object] = {"text": event.said, "ended_at": event.ended_at}
                if event.interrupted:
                    fields.update(interrupted=True, heard_text=event.heard)
                await r.update_turn(turn_id, **fields)
            case ev.DialogueFailed(caller_text=text, reason=reason, said_before=said):
                await r.event(
                    "dialogue", "failure", {"caller_text": text, "reason": reason, "said_before": said}
                )
            case ev.ToolCalled(tool=tool, args=args, reason=reason):
                await r.action("tool", {"tool": tool, "args": args}, reason)
            case ev.ToolDone(tool=tool, ms=ms, fillers=fillers):
                await r.event("tool", "result", {"tool": tool, "ms": ms, "fillers": fillers})
            case ev.ToolFailed(tool=tool, kind=kind, ms=ms):
                await r.event("tool", "failure", {"tool": tool, "kind": kind, "ms": ms})
            case ev.LlmIntentFailed(error=error, ms=ms):
                await r.event("escalation", "llm_intent_failed", {"error": error, "ms": ms})
            case ev.RuleFired(reason=reason):
                self.notice(event)  # (live first, as it always was: the dashboard flags the rule at once)
                await r.event("escalation", "rule_fired", reason)
                return
            case ev.ActionSent(kind=kind, payload=payload, reason=reason):
                self.notice(event)
                await r.action(kind, payload, reason)
                return
            case ev.TransferNotStarted(status=status, department=department, why=why):
                info: dict[str, Any] = {"department": department} | ({"why": why} if why else {})
                await r.event("transfer", status, info)
            case ev.TransferAnswered(department=department):
                await r.event("transfer", "answered", {"department": department})
            case ev.TransferFailed(department=department, why=why):
                await r.event("transfer", "failed", {"department": department, "why": why})
            case ev.ActionUnsupported(kind=kind, reason=reason):
                await r.action(kind, {"unsupported": True}, reason)
            case ev.SupervisorOrder(action=action, department=department, reason=reason):
                await r.action("supervisor", {"action": action, "department": department}, reason)
            case ev.SupervisorListening(user=user):
                await r.event("supervisor", "listen", {"user": user})
            case ev.Tagged(added=added, tags=tags, reason=reason):
                await r.action("tag", {"tags": added}, reason)
                await r.merge_meta(tags=tags)
            case ev.NotifyQueued(webhook=webhook, url=url, reason=reason):
                await r.action("notify", {"webhook": webhook, "url": url}, reason)
            case ev.NotifyMissing(webhook=webhook):
                await r.event("notify", "failed", {"webhook": webhook, "error": "no such webhook"})
            case ev.NotifyDelivered(delivery=delivery, ok=ok):
                await r.event("notify", "sent" if ok else "failed", delivery)
        self.notice(event)
