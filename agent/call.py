"""CallSession: owns one live call, wires its stages, and keeps its record up to date as it happens.

The only place that knows the order of things on a call:
caller audio → 20 ms frames → turn detector (VAD, endpointing, barge-in) → speculative/final ASR →
dialogue → clause-by-clause TTS → paced playout. A reply is one task; barge-in cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.bot import BotConfig
from agent.bus import PublishingTranscriber
from agent.call_record import CallRecord
from agent.dialogue.base import CallContext, DialogueAction, TextDelta
from agent.dialogue.scripted import ScriptedDialogue
from agent.runtime import Runtime
from agent.speech import SpokenReply
from agent.telephony.piopiy import (
    ControlVerb,
    Pcmo,
    StreamMetadata,
    UnknownText,
    bridge_action,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
    hangup_action,
)
from agent.telephony.piopiy_webhooks import CallEvent
from pipelines.asr import SpeculativeTranscriber, Transcript
from pipelines.audio import CallRecording, Reframer
from pipelines.playout import Playout
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

SendText = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class EarlyTurn:
    """A caller turn ended early (semantic endpointing) and being answered: it may yet go on."""

    end_ms: int
    text: str
    turn_id: int | None
    reply: asyncio.Task[None]


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
        self.runtime = runtime
        self.call_id = call_id
        self.bot_name = bot_name
        self.bot = bot
        self.sample_rate = bot.stream.voice_quality
        self.record = CallRecord(runtime.store, call_id, cmiuuid)
        self.ctx = CallContext(call_id, bot_name, bot, caller_number, called_number)
        self.dialogue = ScriptedDialogue(self.ctx)
        self._send_text = send_text
        self._send_lock = asyncio.Lock()
        self.socket_open = True
        self.state = "connecting"
        self.hangup_seen = False
        self.handed_off = False  # bridged to a human: keep transcribing, never answer again
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reply: asyncio.Task[None] | None = None
        self._recording_dir = runtime.recordings_dir / call_id
        self.recording = CallRecording(self._recording_dir, self.sample_rate)
        self.playout = Playout(self._send_audio_chunk, self.sample_rate)
        self.reframer = Reframer(self.sample_rate)
        self.turns = TurnDetector(self.sample_rate, bot.turn_taking.turn_config())
        self.asr = self._new_asr()
        self._frame_samples = self.reframer.frame_bytes // 2
        # Caller audio is the call's clock: map our monotonic clock onto caller sample positions.
        self._clock_mark = (time.monotonic(), 0)
        self.first_audio_at: float | None = None  # monotonic time the current reply's first chunk left
        self.current_reply: SpokenReply | None = None
        self._cut_reply: SpokenReply | None = None  # cut by a barge-in that may turn out to be "mm-hmm"
        self._early: EarlyTurn | None = None  # the last turn, if ended early and answered: may go on
        self._continuing: EarlyTurn | None = None  # ...and the caller did go on: the next turn joins it

    @property
    def cmiuuid(self) -> str | None:
        """PIOPIY's id of this call, once known."""
        return self.record.cmiuuid

    # ----------------------------------------------------------------------------- lifecycle

    def publish(self, kind: str, **data: Any) -> None:
        """A live event of this call (dashboards, live transcription)."""
        self.runtime.bus.publish(self.call_id, kind, data)

    def _new_asr(self) -> SpeculativeTranscriber:
        return SpeculativeTranscriber(
            PublishingTranscriber(self.runtime.transcribers[self.bot_name], self.publish)
        )

    async def start(self) -> None:
        """The socket is open: mark the call live and greet the caller."""
        self.state = "greeting"
        self.publish(
            "call.started", bot=self.bot_name, caller=self.ctx.caller_number, called=self.ctx.called_number
        )
        await self.record.update(status="active", connected_at=time.time())
        await self.record.event("stream", "connected", {"sample_rate": self.sample_rate})
        self._start_reply(self._speak_fixed(self.bot.greeting))

    async def close(self, reason: str, *, dropped: bool = False) -> None:
        """End the call: stop speaking, save the recording and the final state. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.socket_open = False
        self.asr.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        recording_path = None
        try:
            target = self.runtime.recordings_dir / f"{self.call_id}.wav"
            recording_path = str(await asyncio.to_thread(self.recording.finalize, target))
            shutil.rmtree(self._recording_dir, ignore_errors=True)
        except Exception:  # the raw parts stay on disk and can be recovered
            log.exception("call %s: could not finalize the recording", self.call_id)
        peer_closed = reason.startswith("socket_closed")
        end_reason = "caller_hangup" if self.hangup_seen and peer_closed else reason
        await self.record.event("stream", "closed", {"reason": reason, "dropped": dropped})
        await self.record.update(
            status="dropped" if dropped and not self.hangup_seen else "completed",
            end_reason=end_reason,
            ended_at=time.time(),
            recording_path=recording_path,
        )
        if self.hangup_seen and peer_closed and end_reason != "caller_hangup":
            # PIOPIY's hangup event arrived while we were saving: it says who ended the call.
            await self.record.update(end_reason="caller_hangup")
        self.runtime.unregister(self.call_id)  # no await since the check above: no event slips between
        self.publish("call.ended", reason=end_reason)
        log.info("call %s ended: %s", self.call_id, end_reason)

    # ------------------------------------------------------------------------------- inbound

    def on_audio(self, pcm: bytes) -> None:
        """Caller audio (whole 16-bit samples) from the socket: record it, then detect turns."""
        if not pcm:
            return
        self.recording.add_caller(pcm)
        now = time.monotonic()
        self._clock_mark = (now, self.recording.caller_samples)
        for frame in self.reframer.feed(pcm):
            speaking = self.playout.playing
            if speaking != self.turns.bot_speaking:
                self.turns.set_bot_speaking(speaking)
            if speaking:
                self.turns.feed_reference(self.playout.audio_at(now, self._frame_samples))
            for event in self.turns.feed(frame):
                self._on_turn_event(event, now)

    async def on_text(self, message: StreamMetadata | UnknownText) -> None:
        """A text frame: a call UUID or metadata is kept; junk is logged and kept, never fatal."""
        if isinstance(message, StreamMetadata):
            if message.call_uuid and not self.record.cmiuuid:
                self.record.cmiuuid = message.call_uuid
                await self.record.update(cmiuuid=message.call_uuid)
            await self.record.event(
                "stream", "metadata", {"call_uuid": message.call_uuid, "data": message.data}
            )
        else:
            log.warning("call %s: ignored a text frame that is neither a UUID nor JSON", self.call_id)
            await self.record.event("stream", "junk_text", {"text": message.text})

    async def on_platform_event(self, event: CallEvent) -> None:
        """A PIOPIY event for this call (already stored by the webhook)."""
        if event.status_lower == "hangup":
            self.hangup_seen = True

    async def on_dtmf(self, digits: str) -> None:
        """Keypad digits from an `input` callback."""
        await self.record.event("dtmf", "digits", {"dtmf": digits})

    # --------------------------------------------------------------------------------- turns

    def _on_turn_event(self, event: TurnEvent, now: float) -> None:
        if isinstance(event, SpeechStarted):
            self.publish("speech.started", onset_ms=event.onset_ms)
            self._check_continuation(event)
        elif isinstance(event, SpeechPaused):
            if self.bot.turn_taking.speculative_asr:
                speculation = self.asr.speculate(event.audio)
                if self.bot.turn_taking.semantic_endpoint and speculation is not None:
                    self._spawn(self._end_if_complete(self.turns.turns_begun, speculation))
        elif isinstance(event, TurnDiscarded):
            self.asr.cancel()
        elif isinstance(event, BargeIn):
            if self._reply is not None and not self._reply.done() and self.playout.playing:
                self._spawn(self._barge_in(event))
        elif isinstance(event, TurnEnded):
            # When the caller actually stopped talking, on our clock.
            speech_end = now - (event.at_ms - event.end_ms) / 1000
            asr, self.asr = self.asr, self._new_asr()
            self._spawn(self._caller_turn(event, asr, speech_end))

    async def _end_if_complete(self, turn: int, speculation: asyncio.Task[Transcript]) -> None:
        """Semantic endpointing: end the paused turn as soon as its speculative text reads as whole."""
        with contextlib.suppress(asyncio.CancelledError, Exception):
            transcript = await asyncio.shield(speculation)
            if self.handed_off or not (transcript.accepted and looks_complete(transcript.text)):
                return  # (monitor mode answers nothing: no reason to cut turns short)
            # Still the same turn, still paused on the audio this speculation heard?
            if self.closed or self.turns.turns_begun != turn or self.asr.speculation is not speculation:
                return
            event = self.turns.end_turn()
            if event is None:
                if not self.turns.in_turn:
                    self.asr.cancel()  # too short to be a turn
                return
            self._on_turn_event(event, self._clock_mark[0])

    def _check_continuation(self, event: SpeechStarted) -> None:
        """The caller spoke again soon after a turn that ended early: they had not finished."""
        early, self._early = self._early, None
        if early is None or event.onset_ms - early.end_ms >= self.bot.turn_taking.end_silence_ms:
            return
        reply = self._reply
        if reply is not early.reply or reply.done():
            return  # the answer is over, its actions done: too late to take it back
        self._continuing, self._reply = early, None
        self._spawn(self._withdraw_reply(reply))

    async def _withdraw_reply(self, reply: asyncio.Task[None]) -> None:
        if self.playout.playing:
            await self.send_control("break")
        reply.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reply
        self.dialogue.retract()

    async def _barge_in(self, event: BargeIn) -> None:
        await self.send_control("break")
        reply = self._reply
        if reply is not None:
            reply.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reply
            self._cut_reply = self.current_reply
        barge_in = {"onset_ms": event.onset_ms, "detected_after_ms": event.at_ms - event.onset_ms}
        self.publish("barge_in", **barge_in)
        await self.record.event("turns", "barge_in", barge_in)

    async def _caller_turn(self, event: TurnEnded, asr: SpeculativeTranscriber, speech_end: float) -> None:
        wall_end = time.time() - (time.monotonic() - speech_end)
        asr_started = time.monotonic()
        transcript, hit = await asr.final(event.audio)
        asr_wait_ms = round((time.monotonic() - asr_started) * 1000)
        continued, self._continuing = self._continuing, None
        if not transcript.accepted or not transcript.text.strip():
            await self.record.event(
                "asr", "rejected", {"reason": str(transcript.rejected), "detail": transcript.detail}
            )
            return
        text = transcript.text.strip()
        bot_was_speaking = self._reply is not None and not self._reply.done()
        cut, self._cut_reply = self._cut_reply, None
        if (bot_was_speaking or cut is not None) and is_backchannel(text):
            # "mm-hmm" while the bot talks is not a turn; if it cut the bot, the bot picks up where it was.
            remainder = cut.unheard() if cut is not None else ""
            await self.record.event("turns", "backchannel", {"text": text, "resumed": bool(remainder)})
            if remainder:
                self._start_reply(self._say(remainder))
            return
        if self.handed_off:  # monitor mode: the human answers; the record and live view keep the words
            await self.record.turn(
                "caller", text, wall_end - (event.end_ms - event.start_ms) / 1000, ended_at=wall_end
            )
            self.publish("turn", role="caller", text=text, monitor=True)
            return
        latency = {
            "endpoint_ms": event.at_ms - event.end_ms,
            "early_endpoint": event.early,
            "asr_ms": round(transcript.asr_ms),
            "asr_wait_ms": asr_wait_ms,
            "asr_speculative_hit": hit,
        }
        if continued is not None:
            # One turn said in two parts: the record keeps one caller turn, the dialogue hears it whole.
            text = f"{continued.text} {text}"
            turn_id = continued.turn_id
            await self.record.update_turn(turn_id, text=text, ended_at=wall_end, latency=latency)
            await self.record.event("turns", "continued", {"first_part": continued.text, "text": text})
        else:
            duration = (event.end_ms - event.start_ms) / 1000
            turn_id = await self.record.turn(
                "caller", text, wall_end - duration, ended_at=wall_end, latency=latency
            )
        self.publish("turn", role="caller", text=text, latency_ms=latency, continued=continued is not None)
        if self._reply is not None and not self._reply.done():
            self._reply.cancel()  # a whole new turn from the caller supersedes what the bot was saying
        self._start_reply(self._answer(text, speech_end, turn_id, latency))
        if event.early and self._reply is not None:
            self._early = EarlyTurn(event.end_ms, text, turn_id, self._reply)

    # ------------------------------------------------------------------------------ replies

    def _start_reply(self, coro: Awaitable[None]) -> None:
        self._reply = self._spawn(coro)

    async def _speak_fixed(self, text: str) -> None:
        """A fixed line (greeting, fallback) from the phrase cache."""
        pcm = await self.runtime.phrases[self.bot_name].get_or_synthesize(text, self.runtime.executor)
        reply = SpokenReply(self, self.record)
        await reply.play_fixed(text, pcm)

    async def _say(self, text: str) -> None:
        """Speak a line that is not cached (synthesized clause by clause)."""

        async def one() -> AsyncIterator[str]:
            yield text

        await SpokenReply(self, self.record).stream(one())

    async def _answer(
        self, caller_text: str, speech_end: float, caller_turn: int | None, latency: dict[str, Any]
    ) -> None:
        """The dialogue's reply to one caller turn, spoken clause by clause, then its actions."""
        started = time.monotonic()
        actions: list[DialogueAction] = []
        first_text: list[float] = []

        async def text_deltas() -> AsyncIterator[str]:
            async for item in self.dialogue.reply(caller_text):
                if isinstance(item, TextDelta):
                    if not first_text:
                        first_text.append(time.monotonic())
                    yield item.text
                else:
                    actions.append(item)

        reply = SpokenReply(self, self.record)
        try:
            await reply.stream(text_deltas())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("call %s: the dialogue failed; saying the fallback line", self.call_id)
            await self.record.event("dialogue", "failure", {"caller_text": caller_text})
            await self._speak_fixed(self.bot.phrases.fallback)
            return
        finally:
            if reply.first_audio_at is not None:
                latency.update(
                    dialogue_first_text_ms=round((first_text[0] - started) * 1000) if first_text else None,
                    tts_first_audio_ms=reply.first_synth_ms,
                    response_ms=round((reply.first_audio_at - speech_end) * 1000),
                )
                await self.record.update_turn(caller_turn, latency=latency)
            if reply.interrupted:
                self.dialogue.heard(reply.said, reply.heard)
        for action in actions:
            await self._do(action)

    async def _do(self, action: DialogueAction) -> None:
        """Carry out a dialogue action on the call."""
        if action.kind == "transfer" and action.department:
            dept = self.bot.departments[action.department]
            from_number = self.ctx.called_number or self.ctx.caller_number
            pcmo = [
                bridge_action(
                    from_number, dept.numbers, timeout=dept.timeout, loop=dept.loop, ring_type=dept.ring_type
                )
            ]
            self.state, self.handed_off = "handed_off", True
            await self.send_pcmo(pcmo, reason={**action.reason, "department": action.department})
        elif action.kind == "hangup":
            await self.send_pcmo([hangup_action()], reason=action.reason)
        elif action.kind == "say" and action.text:
            await self._speak_fixed(action.text)
        else:
            log.warning("call %s: action %s is not supported here yet", self.call_id, action.kind)
            await self.record.action(action.kind, {"unsupported": True}, action.reason)

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

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task failed", self.call_id, exc_info=task.exception())
