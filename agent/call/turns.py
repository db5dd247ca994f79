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
from typing import Any

import openai

from agent.call import events as ev
from agent.call.actions import CallActions
from agent.call.answer import Answerer
from agent.call.events import EndpointLatency, TurnLatency
from agent.call.interpretation import interpret
from agent.call.language import CallLanguage
from agent.call.line import CallLine
from agent.call.observer import CallObserver
from agent.call.reply import ReplySlot, Spawn, Speaker, SpokenReply
from agent.call.state import CallStates
from agent.config.bot import BotConfig
from agent.escalation.llm_intent import classify, intent_labels
from agent.escalation.signals import SignalTracker, TurnSignals
from pipelines.asr import SpeculativeTranscriber, Transcript
from pipelines.turns import (
    BargeIn,
    SpeechPaused,
    SpeechStarted,
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnEvent,
)
from pipelines.utterance import is_backchannel, looks_complete

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

    def __init__(
        self,
        bot: BotConfig,
        detector: TurnDetector,
        line: CallLine,
        states: CallStates,
        observer: CallObserver,
        slot: ReplySlot,
        speaker: Speaker,
        language: CallLanguage,
        signals: SignalTracker,
        actions: CallActions,
        answerer: Answerer,
        spawn: Spawn,
        *,
        llm: openai.AsyncOpenAI | None,
        llm_model: str,
    ) -> None:
        self.bot = bot
        self.detector = detector
        self.line = line
        self.states = states
        self.observer = observer
        self.slot = slot
        self.speaker = speaker
        self.language = language
        self.signals = signals
        self.actions = actions
        self.answerer = answerer
        self.spawn = spawn
        self.llm = llm
        self.llm_model = llm_model
        self.asr = self._new_asr()
        self._early: EarlyTurn | None = None  # the last turn, if ended early and answered: may go on
        self._continuing: EarlyTurn | None = None  # ...and the caller did go on: the next turn joins it
        self._cut_reply: SpokenReply | None = None  # cut by a barge-in that may turn out to be "mm-hmm"
        self._active_at = time.monotonic()  # the bot or the caller was last doing something

    def _new_asr(self) -> SpeculativeTranscriber:
        return SpeculativeTranscriber(
            _PublishingTranscriber(self.language, self.observer)
        )  # caller's language

    def tick(self, now: float) -> None:
        """Every batch of caller audio: count a silence timeout when nobody has said anything for long."""
        busy = self.line.playing or self.detector.in_turn or self.slot.active
        if busy or self.states.current.monitoring or self.states.closed:
            self._active_at = now
        elif now - self._active_at >= self.bot.turn_taking.silence_timeout_s:
            self._active_at = now
            self.spawn(self._silence_timeout())

    async def _silence_timeout(self) -> None:
        await self.observer.emit(ev.SilenceTimeout())
        firing = await self.actions.check_rules("silence")
        if firing is not None:
            self.slot.start(self.actions.run_rule(firing))
        else:
            self.slot.start(self.speaker.speak_fixed(self.bot.phrases.still_there))

    def cancel(self) -> None:
        """The call ends: drop the speculation of a turn that never came."""
        self.asr.cancel()

    def finish(self) -> None:
        """The stream ended: a turn still open ends as if silence had followed its last audio, so the
        caller's last words are transcribed and kept."""
        event = self.detector.finish()
        if event is not None:
            self.on_event(event, self.line.last_audio_at)

    def on_event(self, event: TurnEvent, now: float) -> None:
        """One event of the turn detector, at monotonic time `now`."""
        taking = self.bot.turn_taking
        if isinstance(event, SpeechStarted):
            self.observer.notice(ev.SpeechBegan(event.onset_ms))
            self._check_continuation(event)
        elif isinstance(event, SpeechPaused):
            if taking.speculative_asr:
                speculation = self.asr.speculate(event.audio)
                if taking.semantic_endpoint and speculation is not None:
                    self.spawn(self._end_if_complete(self.detector.turns_begun, speculation))
        elif isinstance(event, TurnDiscarded):
            self.asr.cancel()
        elif isinstance(event, BargeIn):
            if self.slot.active and self.line.playing:
                self.spawn(self._barge_in(event))
        elif isinstance(event, TurnEnded):
            # When the caller actually stopped talking, on our clock.
            speech_end = now - (event.at_ms - event.end_ms) / 1000
            asr, self.asr = self.asr, self._new_asr()
            self.spawn(self._caller_turn(event, asr, speech_end), finishes_at_close=True)

    async def _end_if_complete(self, turn: int, speculation: asyncio.Task[Transcript]) -> None:
        """Semantic endpointing: end the paused turn as soon as its speculative text reads as whole."""
        with contextlib.suppress(asyncio.CancelledError, Exception):
            transcript = await asyncio.shield(speculation)
            if self.states.current.monitoring or not (
                transcript.accepted and looks_complete(transcript.text)
            ):
                return  # (monitor mode answers nothing: no reason to cut turns short)
            # Still the same turn, still paused on the audio this speculation heard?
            detector = self.detector
            if self.states.closed or detector.turns_begun != turn or self.asr.speculation is not speculation:
                return
            event = detector.end_turn()
            if event is None:
                if not detector.in_turn:
                    self.asr.cancel()  # too short to be a turn
                return
            self.on_event(event, self.line.last_audio_at)

    def _check_continuation(self, event: SpeechStarted) -> None:
        """The caller spoke again soon after a turn that ended early: they had not finished."""
        early, self._early = self._early, None
        if early is None or event.onset_ms - early.end_ms >= self.bot.turn_taking.end_silence_ms:
            return
        if self.slot.task is not early.reply or early.reply.done():
            return  # the answer is over, its actions done: too late to take it back
        self._continuing = early
        self.spawn(self._withdraw_reply(self.slot.detach()))

    async def _withdraw_reply(self, reply: asyncio.Task[None] | None) -> None:
        await self.slot.interrupt(reply)
        self.answerer.dialogue.retract()

    async def _barge_in(self, event: BargeIn) -> None:
        if self.slot.task is not None:
            await self.slot.interrupt()
            self._cut_reply = self.slot.current
        await self.observer.emit(ev.BargeIn(event.onset_ms, event.at_ms - event.onset_ms))

    async def _caller_turn(self, event: TurnEnded, asr: SpeculativeTranscriber, speech_end: float) -> None:
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
            rejected = None if transcript.rejected is None else str(transcript.rejected)
            await self.observer.emit(ev.AsrRejected(rejected, transcript.detail))
            return
        text = transcript.text.strip()
        latency = TurnLatency(
            endpoint=EndpointLatency(
                endpoint_ms=event.at_ms - event.end_ms,
                early_endpoint=event.early,
                asr_ms=round(transcript.asr_ms),
                asr_wait_ms=asr_wait_ms,
                asr_speculative_hit=hit,
            )
        )
        if self.states.closed:  # the caller hung up: their last words are kept; nobody is left to answer
            turn_id, text = await self._record_turn(text, event, wall_end, latency, continued)
            await self.observer.emit(ev.TurnUnanswered(turn_id, text, "call_ended"))
            return
        bot_was_speaking = self.slot.active
        cut, self._cut_reply = self._cut_reply, None
        if (bot_was_speaking or cut is not None) and is_backchannel(text):
            # "mm-hmm" while the bot talks is not a turn; if it cut the bot, the bot picks up where it was.
            remainder = cut.unheard() if cut is not None else ""
            await self.observer.emit(ev.Backchannel(text, bool(remainder)))
            if remainder:
                self.slot.start(self.speaker.say(remainder))
            return
        await self._language(transcript)
        if self.states.current.monitoring:  # the human answers; the record and live view keep the words
            started = wall_end - (event.end_ms - event.start_ms) / 1000
            await self._monitor_turn(text, self.language.turn_language(transcript), started, wall_end)
            return
        turn_id, text = await self._record_turn(text, event, wall_end, latency, continued)
        reply = await self._respond(text, turn_id, speech_end, latency, level_dbfs=transcript.level_dbfs)
        if event.early and reply is not None:
            self._early = EarlyTurn(event.end_ms, text, turn_id, reply)

    async def _record_turn(
        self, text: str, event: TurnEnded, wall_end: float, latency: TurnLatency, continued: EarlyTurn | None
    ) -> tuple[int | None, str]:
        """The caller turn into the record and the live view; returns its id and its whole text."""
        if continued is not None:
            # One turn said in two parts: the record keeps one caller turn, the dialogue hears it whole.
            whole = f"{continued.text} {text}"
            turn = ev.CallerTurn(
                continued.turn_id, whole, wall_end, wall_end, latency, continued=continued.text
            )
        else:
            started = wall_end - (event.end_ms - event.start_ms) / 1000
            turn = ev.CallerTurn(self.observer.next_turn(), text, started, wall_end, latency)
        await self.observer.emit(turn)
        return turn.turn_id, turn.text

    async def _asr_failed(self, exc: Exception) -> None:
        """Transcription itself broke (not the caller's audio): the caller hears the fallback line, never
        silence, and it counts as a dialogue failure for the rules (by default a person takes over)."""
        log.error("call %s: transcription failed; saying the fallback line", self.line.call_id, exc_info=exc)
        answered = not (self.states.current.monitoring or self.states.closed)
        await self.observer.emit(ev.AsrFailed(type(exc).__name__, str(exc)[:200], fallback=answered))
        if not answered:
            return

        async def fallback() -> None:
            await self.speaker.speak_fixed(self.bot.phrases.fallback)
            await self.actions.dialogue_failed("asr_failure")

        self.slot.start(fallback())

    async def _language(self, transcript: Transcript) -> None:
        """The caller's language, while it is being detected: once pinned, the rules see it."""
        detection = self.language.observe(transcript)
        if detection is not None:
            await self.observer.emit(ev.LanguageChanged(detection.as_dict(), self.language.choice.reply))

    async def _monitor_turn(self, text: str, language: str, started: float, ended: float) -> None:
        """A caller turn after the handoff: kept for the record and the live view; in another language
        than the agents', with its interpretation (or why there is none) beside the original."""
        turn_id = self.observer.next_turn()
        ours = language == self.bot.language
        await self.observer.emit(ev.MonitorTurn(turn_id, text, started, ended, shown=ours))
        if ours:
            return
        interpreted = await interpret(self.llm, self.llm_model, text, language, self.bot.language)
        await self.observer.emit(
            ev.TurnInterpreted(turn_id, text, language, interpreted.as_dict(), interpreted.text)
        )

    async def keypad(self, digits: str) -> None:
        """Keypad digits: a caller turn of their own (IVR enhancement), answered like speech."""
        text = f"[keypad] {digits}"
        latency = TurnLatency(source="dtmf")
        turn_id = self.observer.next_turn()
        await self.observer.emit(ev.KeypadTurn(turn_id, text, time.time(), latency))
        await self._respond(text, turn_id, time.monotonic(), latency, level_dbfs=None)

    async def _respond(
        self,
        text: str,
        turn_id: int | None,
        speech_end: float,
        latency: TurnLatency,
        *,
        level_dbfs: float | None,
    ) -> asyncio.Task[None] | None:
        """Signals and rules first (a rule may take the call over), then the dialogue's answer."""
        scripted = self.llm is None  # an LLM answers anything: only a script can miss
        turn = self.signals.caller_turn(text, level_dbfs=level_dbfs, understood=None if scripted else True)
        snapshot = self.signals.snapshot()
        stored = {k: v for k, v in asdict(turn).items() if k != "text"} | {
            "sentiment_rolling": snapshot["sentiment.rolling"],
            "sentiment_trend": snapshot["sentiment.trend"],
            "misunderstood_in_a_row": snapshot["misunderstood_in_a_row"],
            "language": snapshot["language"],
            "language_probability": snapshot["language_probability"],
        }
        await self.observer.emit(ev.TurnSignalsRead(turn_id, dict(stored)))
        if self.states.current.monitoring:
            return None  # a supervisor took the call over while this turn was being read
        await self.slot.interrupt()  # a whole new turn from the caller supersedes what the bot was saying
        firing = await self.actions.check_rules("turn")
        if self.states.current.monitoring:
            return None
        if firing is not None and firing.terminal:
            self.slot.start(self.actions.run_rule(firing))
            return None
        if turn.intent is None and self.llm is not None and self.bot.escalation.llm_intents.enabled:
            self.spawn(self._llm_intent(self.llm, turn, turn_id, stored))

        async def rule_then_answer() -> None:
            if firing is not None:
                await self.actions.run_rule(firing)
            await self.answerer.answer(text, speech_end, turn_id, latency)

        return self.slot.start(rule_then_answer())

    async def _llm_intent(
        self, llm: openai.AsyncOpenAI, turn: TurnSignals, turn_id: int | None, stored: dict[str, Any]
    ) -> None:
        """The LLM names the intent the YAML missed, beside the answer; the rules look again.

        A terminal rule (transfer, hangup) cuts the answer short; any other runs after it.
        """
        cfg = self.bot.escalation.llm_intents
        found = await classify(llm, self.llm_model, turn.text, intent_labels(self.bot), cfg.timeout_s)
        if found.error is not None:
            await self.observer.emit(ev.LlmIntentFailed(found.error, found.ms))
            return
        if found.intent is None or self.states.current.monitoring:
            return  # nothing named, or the call moved on (a handoff) meanwhile
        if not self.signals.set_intent(turn, found.intent, 0.8):
            return  # a newer turn came meanwhile
        stored.update(intent=found.intent, intent_confidence=0.8, intent_source="llm", intent_ms=found.ms)
        await self.observer.emit(ev.TurnSignalsRead(turn_id, dict(stored)))
        firing = await self.actions.check_rules("llm_intent")
        if firing is None:
            return
        answering = self.slot.task
        if firing.terminal:
            await self.slot.interrupt()  # the caller is being handed over: no point finishing the answer

        async def after_answer() -> None:
            if answering is not None and not answering.done():
                await asyncio.wait({answering})
            await self.actions.run_rule(firing)

        self.slot.start(after_answer())


class _PublishingTranscriber:
    """The call's transcriber, whose accepted text also reaches the live feed as it forms."""

    def __init__(self, inner: CallLanguage, observer: CallObserver) -> None:
        self._inner = inner
        self._observer = observer

    @property
    def sample_rate_in(self) -> int:
        """The call rate."""
        return self._inner.sample_rate_in

    async def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe, then publish accepted text as a partial transcript."""
        transcript = await self._inner.transcribe(pcm)
        if transcript.accepted and transcript.text.strip():
            self._observer.notice(ev.PartialTranscript(transcript.text.strip(), round(transcript.asr_ms)))
        return transcript
