"""CallSession: owns one live call, wires its stages, and keeps its record up to date as it happens.

The only place that knows the order of things on a call:
caller audio → 20 ms frames → turn detector (VAD, endpointing, barge-in) → speculative/final ASR →
dialogue → clause-by-clause TTS → paced playout. A reply is one task; barge-in cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agent.bot import BotConfig
from agent.bot_actions import ActionSpec
from agent.call_answer import Answerer, transfer_pcmo
from agent.call_language import CallLanguage
from agent.call_record import CallRecord
from agent.call_turns import CallerTurns
from agent.dialogue.base import CallContext, DialogueAction
from agent.dialogue.scripted import IntentMatcher
from agent.dialogue.tools import ToolBox
from agent.escalation.rules import Firing, RuleState
from agent.escalation.signals import SignalTracker
from agent.listen import BOT, CALLER
from agent.logs import for_call
from agent.metrics import call_outcome
from agent.recordings import GuardedRecording
from agent.runtime import Runtime
from agent.security import is_call_id
from agent.speech import SpokenReply
from agent.telephony.piopiy import (
    ControlVerb,
    Pcmo,
    StreamMetadata,
    UnknownText,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
    play_action,
)
from agent.telephony.piopiy_webhooks import CallEvent
from agent.text_frames import TextFrameBudget
from pipelines.audio import Reframer
from pipelines.playout import Playout
from pipelines.tts import PhraseCache, Synthesizer
from pipelines.turns import TurnDetector

log = logging.getLogger(__name__)

ANSWERED = frozenset({"out_answered", "out_bridged", "answered"})
FAILED = frozenset({"hangup", "missed", "busy", "failed", "no_answer", "noanswer", "rejected"})
TRANSFER_GRACE_S = 5.0
"""Beyond the department's ring time (timeout × loop), how long to wait for its answer event."""
FINISH_TURNS_S = 15.0
"""When a call ends, how long its last caller turns may still take to be transcribed and recorded."""


@dataclass
class Transfer:
    """The transfer in flight, and how it ended (None: ringing)."""

    department: str
    started_at: float
    outcome: str | None = None


SendText = Callable[[str], Awaitable[None]]


class CallSession:
    """One call on one stream socket."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        call_id: str,
        bot_name: str,
        bot: BotConfig,
        send_text: SendText,
        cmiuuid: str | None = None,
        caller_number: str = "",
        called_number: str = "",
    ) -> None:
        if not is_call_id(call_id):  # it names the recording's files: nothing else may reach a path
            raise ValueError(f"not a call id: {call_id[:80]!r}")
        self.runtime = runtime
        self.call_id = call_id
        self.bot_name = bot_name
        self.bot = bot
        self.sample_rate = bot.stream.voice_quality
        self.record = CallRecord(runtime.writer, call_id, cmiuuid)
        self.ctx = CallContext(call_id, bot_name, bot, caller_number, called_number)
        self.toolbox = ToolBox(bot, http=runtime.tool_http)
        self.answerer = Answerer(self, self.toolbox)
        self.dialogue = runtime.new_dialogue(self.ctx, self.toolbox, run_tool=self.answerer.run_tool)
        self._send_text = send_text
        self._send_lock = asyncio.Lock()
        self.socket_open = True
        self._state = "connecting"
        self.started_at = time.time()
        self.hangup_seen = False
        self.handed_off = False  # bridged to a human: keep transcribing, never answer again
        self.taken_over = False  # a supervisor's transfer or hang-up is under way: answer nothing more
        self.bot_hung_up = False  # the bot sent a hangup PCMO
        self.tags: list[str] = []  # labels from `tag` actions
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_tasks: set[asyncio.Task[Any]] = set()  # caller turns being transcribed: finished at close
        self.reply_task: asyncio.Task[None] | None = None  # what the bot is saying (or about to)
        self.recording = GuardedRecording(
            runtime.recordings_dir / call_id, self.sample_rate, self._recording_failed
        )
        storage = runtime.settings.service.storage
        self.text_frames = TextFrameBudget(storage.max_text_frames, storage.max_text_bytes)
        self.playout = Playout(self._send_audio_chunk, self.sample_rate)
        self.reframer = Reframer(self.sample_rate)
        self.turns = TurnDetector(self.sample_rate, bot.turn_taking.turn_config())
        self.language = CallLanguage(bot, runtime.transcribers[bot_name], self.ctx.language)
        self.caller_turns = CallerTurns(self)
        self.transfer_state: Transfer | None = None
        self.signals = SignalTracker(IntentMatcher(bot.intents), language=bot.language)
        self.escalation = RuleState(runtime.rules[bot_name])
        self._frame_samples = self.reframer.frame_bytes // 2
        # Caller audio is the call's clock: map our monotonic clock onto caller sample positions.
        self._clock_mark = (time.monotonic(), 0)
        self.first_audio_at: float | None = None  # monotonic time the current reply's first chunk left
        self.current_reply: SpokenReply | None = None

    @property
    def state(self) -> str:
        """What the call is doing: connecting, greeting, speaking, listening, handed_off."""
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value == self._state:
            return
        self._state = value
        self.publish("state", state=value)  # live lists follow it (and other workers' registries)
        self.runtime.state_changed(self)

    @property
    def cmiuuid(self) -> str | None:
        """PIOPIY's id of this call, once known."""
        return self.record.cmiuuid

    # ----------------------------------------------------------------------------- lifecycle

    def publish(self, kind: str, **data: Any) -> None:
        """A live event of this call (dashboards, live transcription)."""
        self.runtime.bus.publish(self.call_id, kind, data)

    async def start(self) -> None:
        """The socket is open: mark the call live and greet the caller."""
        self.publish(
            "call.started", bot=self.bot_name, caller=self.ctx.caller_number, called=self.ctx.called_number
        )
        self.state = "greeting"  # after call.started: live views list the call, then follow it
        # The stream's claim made the call `active` and recorded who serves it (agent/stream.py).
        await self.record.event("stream", "connected", {"sample_rate": self.sample_rate})
        self.start_reply(self.speak_fixed(self.bot.greeting))

    async def close(self, reason: str, *, dropped: bool = False) -> None:
        """End the call: stop speaking, save the recording and the final state. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.socket_open = False
        # A turn still open ends as the stream did: its words are transcribed and kept, not answered.
        self.caller_turns.finish(self.last_audio_at)
        self.caller_turns.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._finish_caller_turns()
        outcome = call_outcome(
            handed_off=self.handed_off, bot_hung_up=self.bot_hung_up, dropped=dropped and not self.hangup_seen
        )
        self.runtime.metrics.call_ended(self.bot_name, outcome)
        if self.recording.failure is not None:
            stopped_at = round(self.recording.failed_at / self.sample_rate, 2)
            await self.record.event(
                "recording", "failed", {"error": self.recording.failure, "at_s": stopped_at}
            )
        # None when the disk refuses: the raw parts stay and the WAV follows (agent/recordings.py).
        recording_path = await self.runtime.recordings.finish(self.call_id, self.recording)
        peer_closed = reason.startswith("socket_closed")
        end_reason = "caller_hangup" if self.hangup_seen and peer_closed else reason
        if (truncated := self.text_frames.summary()) is not None:
            await self.record.event("stream", "text_truncated", truncated)
        await self.record.event("stream", "closed", {"reason": reason, "dropped": dropped})
        ended = {"recording_path": recording_path} if recording_path else {}  # never unset a later WAV
        await self.record.update(
            status="dropped" if dropped and not self.hangup_seen else "completed",
            end_reason=end_reason,
            ended_at=time.time(),
            **ended,
        )
        if self.hangup_seen and peer_closed and end_reason != "caller_hangup":
            # PIOPIY's hangup event arrived while we were saving: it says who ended the call.
            await self.record.update(end_reason="caller_hangup")
        self.runtime.unregister(self.call_id)  # no await since the check above: no event slips between
        self.publish("call.ended", reason=end_reason)
        self.runtime.listen.ended(self.call_id, self.sample_rate)
        log.info("call %s ended: %s", self.call_id, end_reason)

    async def _finish_caller_turns(self) -> None:
        """Let the caller turns still being transcribed reach the record (up to FINISH_TURNS_S)."""
        turns = set(self._turn_tasks)
        if not turns:
            return
        _, late = await asyncio.wait(turns, timeout=FINISH_TURNS_S)
        for task in late:
            log.warning("call %s: a caller turn still untranscribed %.0f s after the end", self.call_id,
                        FINISH_TURNS_S)  # fmt: skip
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------------------- inbound

    def on_audio(self, pcm: bytes) -> None:
        """Caller audio (whole 16-bit samples) from the socket: record it, then detect turns."""
        if not pcm:
            return
        self.recording.add_caller(pcm)
        self.runtime.listen.feed(self.call_id, CALLER, self.sample_rate, pcm)
        now = time.monotonic()
        self._clock_mark = (now, self.recording.caller_samples)
        for frame in self.reframer.feed(pcm):
            speaking = self.playout.playing
            if speaking != self.turns.bot_speaking:
                self.turns.set_bot_speaking(speaking)
            if speaking:
                self.turns.feed_reference(self.playout.audio_at(now, self._frame_samples))
            for event in self.turns.feed(frame):
                self.caller_turns.on_event(event, now)
        self.caller_turns.tick(now)

    async def on_line_silence(self, seconds: float) -> None:
        """No audio came for `seconds` while the caller was mid-turn (the carrier stopped sending frames):
        that time is silence, as if it had arrived (recording included), so the turn ends and is answered."""
        self.on_audio(bytes(2 * round(seconds * self.sample_rate)))
        await self.record.event("stream", "no_audio", {"ms": round(seconds * 1000), "counted_as": "silence"})

    async def on_text(self, message: StreamMetadata | UnknownText) -> None:
        """A text frame: a call UUID or metadata is kept; junk is logged and kept, never fatal. The record
        keeps a bounded number and size of them (agent/text_frames.py)."""
        admitted = self.text_frames.admit(message.size)
        if isinstance(message, StreamMetadata):
            if message.call_uuid and not self.record.cmiuuid:
                self.record.cmiuuid = message.call_uuid
                await self.record.update(cmiuuid=message.call_uuid)
            if admitted == "whole":
                payload: dict[str, Any] = {"call_uuid": message.call_uuid, "data": message.data}
            else:
                payload = {"call_uuid": message.call_uuid, "truncated": True, "bytes": message.size}
            if admitted != "drop":
                await self.record.event("stream", "metadata", payload)
        else:
            if self.text_frames.received <= 1 or admitted != "drop":  # not one log line per junk frame
                log.warning("call %s: ignored a text frame that is neither a UUID nor JSON", self.call_id)
            if admitted == "whole":
                await self.record.event("stream", "junk_text", {"text": message.text})
            elif admitted == "stub":
                await self.record.event("stream", "junk_text", {"truncated": True, "bytes": message.size})

    def _recording_failed(self, error: str, at_sample: int) -> None:
        """The call's raw recording could not be written: the call goes on, unrecorded from here (the
        record gets a `recording/failed` event when the call ends)."""
        log.warning(
            "call %s: recording stopped at %.1f s: %s", self.call_id, at_sample / self.sample_rate, error
        )
        self.runtime.metrics.error(self.bot_name, "recording", "write_failed")
        self.runtime.recordings.write_failed(self.call_id, error)

    async def on_platform_event(self, event: CallEvent) -> None:
        """A PIOPIY event for this call (already stored by the webhook); leg b tells a transfer's fate."""
        transfer = self.transfer_state
        if event.leg == "b" and transfer is not None and transfer.outcome is None:
            if event.status_lower in ANSWERED:
                transfer.outcome = "answered"
                await self.record.event("transfer", "answered", {"department": transfer.department})
                self.publish("transfer.answered", department=transfer.department)
            elif event.status_lower in FAILED:
                await self._transfer_failed(event.status_lower)
            return
        if event.status_lower == "hangup":
            self.hangup_seen = True

    async def on_dtmf(self, digits: str) -> None:
        """Keypad digits from an `input` callback: caller input for the dialogue (IVR enhancement)."""
        await self.record.event("dtmf", "digits", {"dtmf": digits})
        if digits and not self.handed_off and not self.closed:
            await self.caller_turns.keypad(digits)

    # ---------------------------------------------------------------------------- escalation

    async def check_rules(self, trigger: str) -> Firing | None:
        """The escalation rule that fires on the signals now, if any; recorded with its reasons."""
        firing = self.escalation.check(self.signals.snapshot())
        if firing is not None:
            context = {"trigger": trigger, "caller_turn": self.signals.counters["turns"]}
            firing = dataclasses.replace(firing, context=context)
            reason = firing.reason()
            self.publish("escalation", **reason)
            await self.record.event("escalation", "rule_fired", reason)
        return firing

    async def run_rule(self, firing: Firing) -> None:
        """A fired rule's actions, in order; a transfer without a line of its own says the handoff line."""
        reason = firing.reason()
        spoken = any(a.say for a in firing.actions)
        for spec in firing.actions:
            if spec.transfer and not spoken:
                await self.speak_fixed(self.bot.phrases.handoff)  # a handoff is never silent
            await self.answerer.do(DialogueAction.from_spec(spec, reason))

    async def on_dialogue_failure(self, reason: str) -> None:
        """After the fallback line: the rules see the failure; by default the caller goes to a person."""
        self.signals.count("dialogue_failures")
        firing = await self.check_rules("dialogue_failure")
        if firing is not None:
            await self.run_rule(firing)
        if (firing is not None and firing.terminal) or self.handed_off:
            return
        department = self.bot.escalation.failure_department or next(iter(self.bot.departments), None)
        if department is not None:
            await self.transfer(
                department, {"trigger": "dialogue_failure", "reason": reason, "default": True}
            )

    async def transfer(self, department: str, reason: dict[str, Any]) -> None:
        """Bridge the caller to a configured department; one transfer at a time, then monitor mode."""
        if self.handed_off:
            await self.record.event(
                "transfer", "ignored", {"department": department, "why": "already handed off"}
            )
            return
        if department not in self.bot.departments:  # never a number: only what the YAML configures
            await self.record.event("transfer", "refused", {"department": department})
            return
        self.state, self.handed_off = "handed_off", True
        dept = self.bot.departments[department]
        self.transfer_state = Transfer(department, time.monotonic())
        await self.send_pcmo(transfer_pcmo(self, department), reason={**reason, "department": department})
        self.runtime.metrics.transfer(self.bot_name, department, reason)
        # Nobody answering is known from the events (leg b), or from the ring time running out.
        self.spawn(self._transfer_watch(self.transfer_state, dept.timeout * dept.loop + TRANSFER_GRACE_S))

    async def _transfer_watch(self, transfer: Transfer, limit_s: float) -> None:
        await asyncio.sleep(limit_s)
        if self.transfer_state is transfer and transfer.outcome is None:
            await self._transfer_failed("no_answer")

    async def _transfer_failed(self, why: str) -> None:
        """The transfer failed or nobody answered: the department's `if_unanswered`, else apology + hangup."""
        transfer = self.transfer_state
        if transfer is None or transfer.outcome is not None:
            return
        transfer.outcome = why
        self.signals.count("transfer_failures")
        info = {"department": transfer.department, "why": why}
        await self.record.event("transfer", "failed", info)
        self.publish("transfer.failed", **info)
        self.runtime.metrics.error(self.bot_name, "transfer", why)
        self.state, self.handed_off = "listening", False  # the caller is ours again
        self.taken_over = False
        actions = self.bot.departments[transfer.department].if_unanswered
        specs = actions or [ActionSpec(say=self.bot.phrases.unanswered), ActionSpec(hangup=True)]
        reason = {"trigger": "transfer_failed", **info}

        async def fallback() -> None:
            for spec in specs:
                await self.answerer.do(DialogueAction.from_spec(spec, reason))

        self.start_reply(fallback())

    async def play_hold(self, reason: dict[str, Any]) -> None:
        """Hold music from the bot's `hold_music` URL (a PCMO play), else the hold line."""
        if self.bot.hold_music:
            await self.send_pcmo([play_action(self.bot.hold_music)], reason=reason)
        else:
            await self.speak_fixed(self.bot.phrases.hold)

    # ------------------------------------------------------------------------------ replies

    @property
    def monitoring(self) -> bool:
        """The bot answers nothing (a human has or is about to have the caller); turns are still kept."""
        return self.handed_off or self.taken_over

    @property
    def last_audio_at(self) -> float:
        """Monotonic time the latest caller audio arrived (the turn detector's "now")."""
        return self._clock_mark[0]

    def start_reply(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run `coro` as what the bot says now (barge-in cancels it)."""
        self.reply_task = self.spawn(coro)

    @property
    def voice(self) -> tuple[Synthesizer, PhraseCache]:
        """The voice (and its phrase cache) of the language the bot answers in now."""
        return self.runtime.voice(self.bot_name, self.ctx.reply_language)

    async def speak_fixed(self, text: str) -> None:
        """A fixed line (greeting, fallback) from the phrase cache, in the caller's language if it has it."""
        text, language = self.language.fixed_line(text)
        cache = self.runtime.voice(self.bot_name, language)[1]
        pcm = await cache.get_or_synthesize(text, self.runtime.executor)
        reply = SpokenReply(self, self.record)
        await reply.play_fixed(text, pcm)

    async def say(self, text: str) -> None:
        """Speak a line that is not cached (synthesized clause by clause)."""

        async def one() -> AsyncIterator[str]:
            yield text

        await SpokenReply(self, self.record).stream(one())

    # ------------------------------------------------------------------------------ outbound

    async def send_control(self, verb: ControlVerb) -> None:
        """Send break / pause / resume / stop."""
        await self._send(encode_control(verb))

    async def send_pcmo(self, actions: Pcmo, *, reason: dict[str, Any]) -> None:
        """Run PCMO actions mid-call (transfer, music, hangup), recorded with their reason."""
        await self._send(encode_pcmo(actions))
        self.publish("action", type="pcmo", payload=actions, reason=reason)
        await self.record.action("pcmo", actions, reason)

    async def _send_audio_chunk(self, chunk: bytes, start: float) -> None:
        at_sample = self.caller_sample_at(start)
        await self._send(encode_stream_audio(chunk, self.sample_rate))
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.recording.add_bot(chunk, at_sample=at_sample)
        self.runtime.listen.feed(self.call_id, BOT, self.sample_rate, chunk)

    def caller_sample_at(self, mono: float) -> int:
        """Position on the caller timeline (the recording's clock) of a monotonic time."""
        t, samples = self._clock_mark
        return max(0, samples + int((mono - t) * self.sample_rate))

    async def _send(self, text: str) -> None:
        if not self.socket_open:
            return
        async with self._send_lock:
            try:
                await self._send_text(text)
            except Exception as exc:  # the peer went away; the receive loop will end the call
                log.info("call %s: send failed (%s); socket considered closed", self.call_id, exc)
                self.socket_open = False

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, finishes_at_close: bool = False
    ) -> asyncio.Task[None]:
        """A task of this call: cancelled when the call closes, its failure logged.

        It runs as this call's (log lines, its share of the model pool) even when started from a
        webhook or another worker's command. `finishes_at_close`: a caller turn being transcribed, which
        `close` lets finish (the caller's last words are kept) instead of cancelling.
        """
        context = contextvars.copy_context()
        context.run(for_call, self.call_id)
        task = asyncio.get_running_loop().create_task(coro, context=context)
        if self.closed and not finishes_at_close:  # e.g. DTMF that arrived as the call closed
            task.cancel()
        (self._turn_tasks if finishes_at_close else self._tasks).add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._turn_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task failed", self.call_id, exc_info=task.exception())
