"""Caller turns on a call: what the turn detector's events mean for the conversation.

Speculative ASR at pauses, semantic endpointing (a whole sentence ends the turn at its pause), a
caller who goes on after such an early end (one turn, and the bot takes back what it started),
barge-in (break, cancel, what was heard), backchannels (the bot resumes), monitor mode after a
handoff, and the caller turn record with its latencies, before the answer starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from agent.bus import PublishingTranscriber
from agent.escalation.llm_intent import classify, intent_labels
from agent.escalation.signals import TurnSignals
from agent.interpretation import interpret
from pipelines.asr import SpeculativeTranscriber, Transcript
from pipelines.turns import BargeIn, SpeechPaused, SpeechStarted, TurnDiscarded, TurnEnded, TurnEvent
from pipelines.utterance import is_backchannel, looks_complete

if TYPE_CHECKING:
    from agent.call import CallSession
    from agent.speech import SpokenReply

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarlyTurn:
    """A caller turn ended early (semantic endpointing) and being answered: it may yet go on."""

    end_ms: int
    text: str
    turn_id: int | None
    reply: asyncio.Task[None]


class CallerTurns:
    """Turn events of one call, in order (see the module docstring)."""

    def __init__(self, session: CallSession) -> None:
        self.session = session
        self.asr = self._new_asr()
        self._early: EarlyTurn | None = None  # the last turn, if ended early and answered: may go on
        self._continuing: EarlyTurn | None = None  # ...and the caller did go on: the next turn joins it
        self._cut_reply: SpokenReply | None = None  # cut by a barge-in that may turn out to be "mm-hmm"
        self._active_at = time.monotonic()  # the bot or the caller was last doing something

    def _new_asr(self) -> SpeculativeTranscriber:
        s = self.session
        return SpeculativeTranscriber(
            PublishingTranscriber(s.language, s.publish)
        )  # in the caller's language

    def tick(self, now: float) -> None:
        """Every batch of caller audio: count a silence timeout when nobody has said anything for long."""
        s = self.session
        busy = s.playout.playing or s.turns.in_turn or (s.reply_task is not None and not s.reply_task.done())
        if busy or s.monitoring or s.closed:
            self._active_at = now
        elif now - self._active_at >= s.bot.turn_taking.silence_timeout_s:
            self._active_at = now
            s.spawn(self._silence_timeout())

    async def _silence_timeout(self) -> None:
        s = self.session
        s.signals.count("silence_timeouts")
        await s.record.event("turns", "silence_timeout", {"count": s.signals.counters["silence_timeouts"]})
        firing = await s.check_rules("silence")
        if firing is not None:
            s.start_reply(s.run_rule(firing))
        else:
            s.start_reply(s.speak_fixed(s.bot.phrases.still_there))

    def cancel(self) -> None:
        """The call ends: drop the speculation of a turn that never came."""
        self.asr.cancel()

    def finish(self, last_audio_at: float) -> None:
        """The stream ended (`last_audio_at`: when its last audio came): a turn still open ends as if
        silence had followed it, so the caller's last words are transcribed and kept."""
        event = self.session.turns.finish()
        if event is not None:
            self.on_event(event, last_audio_at)

    def on_event(self, event: TurnEvent, now: float) -> None:
        s = self.session
        if isinstance(event, SpeechStarted):
            s.publish("speech.started", onset_ms=event.onset_ms)
            self._check_continuation(event)
        elif isinstance(event, SpeechPaused):
            if s.bot.turn_taking.speculative_asr:
                speculation = self.asr.speculate(event.audio)
                if s.bot.turn_taking.semantic_endpoint and speculation is not None:
                    s.spawn(self._end_if_complete(s.turns.turns_begun, speculation))
        elif isinstance(event, TurnDiscarded):
            self.asr.cancel()
        elif isinstance(event, BargeIn):
            if s.reply_task is not None and not s.reply_task.done() and s.playout.playing:
                s.spawn(self._barge_in(event))
        elif isinstance(event, TurnEnded):
            # When the caller actually stopped talking, on our clock.
            speech_end = now - (event.at_ms - event.end_ms) / 1000
            asr, self.asr = self.asr, self._new_asr()
            s.spawn(self._caller_turn(event, asr, speech_end), finishes_at_close=True)

    async def _end_if_complete(self, turn: int, speculation: asyncio.Task[Transcript]) -> None:
        """Semantic endpointing: end the paused turn as soon as its speculative text reads as whole."""
        s = self.session
        with contextlib.suppress(asyncio.CancelledError, Exception):
            transcript = await asyncio.shield(speculation)
            if s.monitoring or not (transcript.accepted and looks_complete(transcript.text)):
                return  # (monitor mode answers nothing: no reason to cut turns short)
            # Still the same turn, still paused on the audio this speculation heard?
            if s.closed or s.turns.turns_begun != turn or self.asr.speculation is not speculation:
                return
            event = s.turns.end_turn()
            if event is None:
                if not s.turns.in_turn:
                    self.asr.cancel()  # too short to be a turn
                return
            self.on_event(event, s.last_audio_at)

    def _check_continuation(self, event: SpeechStarted) -> None:
        """The caller spoke again soon after a turn that ended early: they had not finished."""
        s = self.session
        early, self._early = self._early, None
        if early is None or event.onset_ms - early.end_ms >= s.bot.turn_taking.end_silence_ms:
            return
        reply = s.reply_task
        if reply is not early.reply or reply.done():
            return  # the answer is over, its actions done: too late to take it back
        self._continuing, s.reply_task = early, None
        s.spawn(self._withdraw_reply(reply))

    async def _withdraw_reply(self, reply: asyncio.Task[None]) -> None:
        s = self.session
        if s.playout.playing:
            await s.send_control("break")
        reply.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reply
        s.dialogue.retract()

    async def _barge_in(self, event: BargeIn) -> None:
        s = self.session
        await s.send_control("break")
        reply = s.reply_task
        if reply is not None:
            reply.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reply
            self._cut_reply = s.current_reply
        s.signals.count("barge_ins")
        s.runtime.metrics.barge_in(s.bot_name)
        barge_in = {"onset_ms": event.onset_ms, "detected_after_ms": event.at_ms - event.onset_ms}
        s.publish("barge_in", **barge_in)
        await s.record.event("turns", "barge_in", barge_in)

    async def _caller_turn(self, event: TurnEnded, asr: SpeculativeTranscriber, speech_end: float) -> None:
        s = self.session
        wall_end = time.time() - (time.monotonic() - speech_end)
        asr_started = time.monotonic()
        try:
            transcript, hit = await asr.final(event.audio)
        except Exception as exc:
            await self._asr_failed(exc)
            return
        asr_wait_ms = round((time.monotonic() - asr_started) * 1000)
        continued, self._continuing = self._continuing, None
        if not transcript.accepted or not transcript.text.strip():
            await s.record.event(
                "asr", "rejected", {"reason": str(transcript.rejected), "detail": transcript.detail}
            )
            s.runtime.metrics.error(s.bot_name, "asr", str(transcript.rejected or "empty"))
            return
        text = transcript.text.strip()
        latency = {
            "endpoint_ms": event.at_ms - event.end_ms,
            "early_endpoint": event.early,
            "asr_ms": round(transcript.asr_ms),
            "asr_wait_ms": asr_wait_ms,
            "asr_speculative_hit": hit,
        }
        if s.closed:  # the caller hung up: their last words are kept; nobody is left to answer them
            turn_id, text = await self._record_turn(text, event, wall_end, latency, continued)
            await s.record.event(
                "turns", "unanswered", {"turn_id": turn_id, "text": text, "why": "call_ended"}
            )
            return
        bot_was_speaking = s.reply_task is not None and not s.reply_task.done()
        cut, self._cut_reply = self._cut_reply, None
        if (bot_was_speaking or cut is not None) and is_backchannel(text):
            # "mm-hmm" while the bot talks is not a turn; if it cut the bot, the bot picks up where it was.
            remainder = cut.unheard() if cut is not None else ""
            await s.record.event("turns", "backchannel", {"text": text, "resumed": bool(remainder)})
            if remainder:
                s.start_reply(s.say(remainder))
            return
        await self._language(transcript)
        if s.monitoring:  # monitor mode: the human answers; the record and live view keep the words
            started = wall_end - (event.end_ms - event.start_ms) / 1000
            await self._monitor_turn(text, s.language.turn_language(transcript), started, wall_end)
            return
        turn_id, text = await self._record_turn(text, event, wall_end, latency, continued)
        reply = await self._respond(text, turn_id, speech_end, latency, level_dbfs=transcript.level_dbfs)
        if event.early and reply is not None:
            self._early = EarlyTurn(event.end_ms, text, turn_id, reply)

    async def _record_turn(
        self,
        text: str,
        event: TurnEnded,
        wall_end: float,
        latency: dict[str, Any],
        continued: EarlyTurn | None,
    ) -> tuple[int | None, str]:
        """The caller turn into the record and the live view; returns its id and its whole text."""
        s = self.session
        if continued is not None:
            # One turn said in two parts: the record keeps one caller turn, the dialogue hears it whole.
            text = f"{continued.text} {text}"
            turn_id = continued.turn_id
            await s.record.update_turn(turn_id, text=text, ended_at=wall_end, latency=latency)
            await s.record.event("turns", "continued", {"first_part": continued.text, "text": text})
        else:
            duration = (event.end_ms - event.start_ms) / 1000
            turn_id = await s.record.turn(
                "caller", text, wall_end - duration, ended_at=wall_end, latency=latency
            )
        s.publish("turn", role="caller", text=text, latency_ms=latency, continued=continued is not None)
        s.runtime.metrics.turn_latency(s.bot_name, latency)  # endpoint and ASR (the answer: Answerer)
        return turn_id, text

    async def _asr_failed(self, exc: Exception) -> None:
        """Transcription itself broke (not the caller's audio): the caller hears the fallback line, never
        silence, and it counts as a dialogue failure for the rules (by default a person takes over)."""
        s = self.session
        log.error("call %s: transcription failed; saying the fallback line", s.call_id, exc_info=exc)
        await s.record.event("asr", "failure", {"error": type(exc).__name__, "detail": str(exc)[:200]})
        s.runtime.metrics.error(s.bot_name, "asr", "failure")
        if s.monitoring or s.closed:
            return

        async def fallback() -> None:
            await s.speak_fixed(s.bot.phrases.fallback)
            await s.on_dialogue_failure("asr_failure")

        s.start_reply(fallback())

    async def _language(self, transcript: Transcript) -> None:
        """The caller's language, while it is being detected: once pinned, the rules see it."""
        s = self.session
        detection = s.language.observe(transcript)
        if detection is None:
            return
        s.signals.language = detection.language
        s.signals.language_probability = detection.probability
        s.signals.language_supported = detection.supported
        info = {**detection.as_dict(), "reply_language": s.ctx.reply_language}
        await s.record.event("asr", "language", info)
        await s.record.merge_meta(language=detection.language)
        s.publish("language", **info)

    async def _monitor_turn(self, text: str, language: str, started: float, ended: float) -> None:
        """A caller turn after the handoff: kept for the record and the live view; in another language
        than the agents', with its interpretation (or why there is none) beside the original."""
        s = self.session
        turn_id = await s.record.turn("caller", text, started, ended_at=ended)
        if language == s.bot.language:
            s.publish("turn", role="caller", text=text, monitor=True)
            return
        model = s.runtime.settings.service.llm.model
        interpreted = await interpret(s.runtime.llm, model, text, language, s.bot.language)
        # Kept in the turn's signals column (no schema change); the record shows it as `translation`.
        await s.record.update_turn(
            turn_id, signals={"language": language, "translation": interpreted.as_dict()}
        )
        s.publish(
            "turn", role="caller", text=text, monitor=True, turn_id=turn_id, language=language,
            translation=interpreted.text, interpretation=interpreted.as_dict(),
        )  # fmt: skip

    async def keypad(self, digits: str) -> None:
        """Keypad digits: a caller turn of their own (IVR enhancement), answered like speech."""
        s = self.session
        text = f"[keypad] {digits}"
        now = time.time()
        latency: dict[str, Any] = {"source": "dtmf"}
        turn_id = await s.record.turn("caller", text, now, ended_at=now, latency=latency)
        s.publish("turn", role="caller", text=text, dtmf=True)
        await self._respond(text, turn_id, time.monotonic(), latency, level_dbfs=None)

    async def _respond(
        self,
        text: str,
        turn_id: int | None,
        speech_end: float,
        latency: dict[str, Any],
        *,
        level_dbfs: float | None,
    ) -> asyncio.Task[None] | None:
        """Signals and rules first (a rule may take the call over), then the dialogue's answer."""
        s = self.session
        scripted = s.runtime.llm is None  # an LLM answers anything: only a script can miss
        turn = s.signals.caller_turn(text, level_dbfs=level_dbfs, understood=None if scripted else True)
        snapshot = s.signals.snapshot()
        stored = {k: v for k, v in asdict(turn).items() if k != "text"} | {
            "sentiment_rolling": snapshot["sentiment.rolling"],
            "sentiment_trend": snapshot["sentiment.trend"],
            "misunderstood_in_a_row": snapshot["misunderstood_in_a_row"],
            "language": snapshot["language"],
            "language_probability": snapshot["language_probability"],
        }
        await s.record.update_turn(turn_id, signals=stored)
        s.publish("signals", turn_id=turn_id, **stored)
        if s.monitoring:
            return None  # a supervisor took the call over while this turn was being read
        if s.reply_task is not None and not s.reply_task.done():
            s.reply_task.cancel()  # a whole new turn from the caller supersedes what the bot was saying
        firing = await s.check_rules("turn")
        if s.monitoring:
            return None
        if firing is not None and firing.terminal:
            s.start_reply(s.run_rule(firing))
            return None
        if turn.intent is None and s.runtime.llm is not None and s.bot.escalation.llm_intents.enabled:
            s.spawn(self._llm_intent(turn, turn_id, stored))

        async def rule_then_answer() -> None:
            if firing is not None:
                await s.run_rule(firing)
            await s.answerer.answer(text, speech_end, turn_id, latency)

        s.start_reply(rule_then_answer())
        return s.reply_task

    async def _llm_intent(self, turn: TurnSignals, turn_id: int | None, stored: dict[str, Any]) -> None:
        """The LLM names the intent the YAML missed, beside the answer; the rules look again.

        A terminal rule (transfer, hangup) cuts the answer short; any other runs after it.
        """
        s = self.session
        assert s.runtime.llm is not None
        cfg = s.bot.escalation.llm_intents
        labels = intent_labels(s.bot)
        model = s.runtime.settings.service.llm.model
        found = await classify(s.runtime.llm, model, turn.text, labels, cfg.timeout_s)
        if found.error is not None:
            await s.record.event("escalation", "llm_intent_failed", {"error": found.error, "ms": found.ms})
            return
        if found.intent is None or s.monitoring or not s.signals.set_intent(turn, found.intent, 0.8):
            return  # nothing named, or the call moved on (a newer turn, a handoff) meanwhile
        stored.update(intent=found.intent, intent_confidence=0.8, intent_source="llm", intent_ms=found.ms)
        await s.record.update_turn(turn_id, signals=stored)
        s.publish("signals", turn_id=turn_id, **stored)
        firing = await s.check_rules("llm_intent")
        if firing is None:
            return
        answering = s.reply_task
        if firing.terminal and answering is not None and not answering.done():
            answering.cancel()  # the caller is being handed over: no point finishing the answer
            if s.playout.playing:
                await s.send_control("break")

        async def after_answer() -> None:
            if answering is not None and not answering.done():
                await asyncio.wait({answering})
            await s.run_rule(firing)

        s.start_reply(after_answer())
