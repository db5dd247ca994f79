"""CallSession: one live call, from the socket's opening to its saved record, told in order.

Caller audio → the line (recording, listen-in, clock) → 20 ms frames → turn detector (VAD, endpointing,
barge-in) → caller turns (ASR) → answerer (dialogue, tools) → speaker (TTS, playout) → the link.
Actions (transfers, hang-up, tags…) go through CallActions; every happening is an event for the observer.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Coroutine
from functools import partial
from typing import Any

from agent.call import events as ev
from agent.call.actions import CallActions, Notifications
from agent.call.answer import Answerer
from agent.call.language import CallLanguage
from agent.call.line import CallLine
from agent.call.observer import CallObserver
from agent.call.reply import ReplySlot, Speaker
from agent.call.state import CallState, CallStates
from agent.call.text_frames import TextFrameBudget
from agent.call.turns import CallerTurns
from agent.config.bot import BotConfig
from agent.dialogue.base import CallContext
from agent.dialogue.scripted import IntentMatcher
from agent.dialogue.tools import ToolBox
from agent.escalation.rules import CompiledRule, RuleState
from agent.escalation.signals import SignalTracker
from agent.records.call_record import CallRecord
from agent.records.recordings import GuardedRecording
from agent.security import is_call_id
from agent.telephony.carrier import CallNews, CarrierLink, Hangup, Junk, Metadata, TransferOutcome
from agent.worker.logs import for_call
from agent.worker.metrics import call_outcome
from agent.worker.runtime import Runtime
from pipelines.audio import Reframer
from pipelines.turns import TurnDetector

log = logging.getLogger(__name__)

FINISH_TURNS_S = 15.0
"""When a call ends, how long its last caller turns may still take to be transcribed and recorded."""


class CallSession:
    """One call on one stream socket."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        call_id: str,
        bot_name: str,
        bot: BotConfig,
        link: CarrierLink,
        cmiuuid: str | None = None,
        caller_number: str = "",
        called_number: str = "",
    ) -> None:
        if not is_call_id(call_id):  # it names the recording's files: nothing else may reach a path
            raise ValueError(f"not a call id: {call_id[:80]!r}")
        self.runtime, self.call_id, self.bot_name, self.bot, self.link = runtime, call_id, bot_name, bot, link
        self.sample_rate = rate = bot.stream.voice_quality
        self.started_at = time.time()
        self.caller_hung_up = False  # the carrier's news, which often comes after the close: not a state
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_tasks: set[asyncio.Task[Any]] = set()  # caller turns being transcribed: finished at close
        self.record = CallRecord(runtime.writer, call_id, cmiuuid)
        self.ctx = CallContext(call_id, bot_name, bot, caller_number, called_number)
        self.signals = SignalTracker(IntentMatcher(bot.intents), language=bot.language)
        self.escalation = RuleState(runtime.rules[bot_name])
        self.observer = CallObserver(
            self.record, runtime.bus.publish, runtime.metrics, self.signals, bot_name=bot_name,
            on_state=partial(runtime.calls.state_changed, self),
        )  # fmt: skip
        self.states = CallStates(lambda before, now: self.observer.notice(ev.StateChanged(before, now)))
        recording = GuardedRecording(runtime.recordings_dir / call_id, rate, self._recording_failed)
        self.line = CallLine(link, recording, runtime.listen, call_id=call_id, sample_rate=rate)
        storage = runtime.settings.service.storage
        self.text_frames = TextFrameBudget(storage.max_text_frames, storage.max_text_bytes)
        self.reply = ReplySlot(self.spawn, link.clear, lambda: self.line.playing)
        self.reframer = Reframer(rate)
        self.turns = TurnDetector(rate, bot.turn_taking.turn_config())
        self.language = CallLanguage(bot, runtime.transcribers[bot_name], self.ctx.language)
        self.speaker = Speaker(
            self.line, self.states, self.observer, self.reply, self.language,
            partial(runtime.voice, bot_name), runtime.executor,
        )  # fmt: skip
        public_url = runtime.settings.service.server.public_url.rstrip("/")
        notifications = Notifications(
            runtime.notifier, lambda: runtime.settings.bots.get(bot_name, bot),
            f"{public_url}/api/calls/{call_id}", runtime.in_background,
        )  # fmt: skip
        self.actions = CallActions(
            self.ctx, link, self.states, self.observer, self.reply, self.speaker, self.signals,
            self.escalation, notifications, self.spawn,
        )  # fmt: skip
        toolbox = ToolBox(bot, http=runtime.tool_http)
        new_dialogue = partial(runtime.new_dialogue, self.ctx, toolbox)
        self.answerer = Answerer(
            bot, lambda run_tool: new_dialogue(run_tool=run_tool), toolbox, self.speaker, self.actions,
            self.observer,
        )  # fmt: skip
        self.caller_turns = CallerTurns(
            bot, self.turns, self.line, self.states, self.observer, self.reply, self.speaker, self.language,
            self.signals, self.actions, self.answerer, self.spawn,
            llm=runtime.llm, llm_model=runtime.settings.service.llm.model,
        )  # fmt: skip
        self._frame_samples = self.reframer.frame_bytes // 2

    @property
    def state(self) -> CallState:
        """What the call is doing (CallState; its value is the name live views show)."""
        return self.states.current

    @property
    def closed(self) -> bool:
        """The call has ended."""
        return self.states.closed

    @property
    def cmiuuid(self) -> str | None:
        """The carrier's id of this call, once known."""
        return self.record.cmiuuid

    def live_info(self) -> dict[str, Any]:
        """What listings of live calls show about it."""
        return {
            "bot": self.bot_name,
            "caller": self.ctx.caller_number,
            "called": self.ctx.called_number,
            "state": str(self.states.shown),
            "started_at": self.started_at,
            "tags": list(self.actions.tags),
        }

    # ----------------------------------------------------------------------------- the call opens

    async def start(self) -> None:
        """The socket is open: mark the call live and greet the caller."""
        # The stream's claim made the call `active` and recorded who serves it (agent/telephony/socket.py).
        ctx = self.ctx
        await self.observer.emit(
            ev.CallStarted(self.bot_name, ctx.caller_number, ctx.called_number, self.sample_rate)
        )
        self.states.move(CallState.GREETING)  # after call.started: live views list the call, then follow it
        self.reply.start(self.speaker.speak_fixed(self.bot.greeting))

    # ---------------------------------------------------------------------------- the caller talks

    def on_audio(self, pcm: bytes) -> None:
        """Caller audio (whole 16-bit samples) from the socket: onto the line, then into turns."""
        if not pcm:
            return
        now = self.line.caller_audio(pcm)
        playout = self.line.playout
        for frame in self.reframer.feed(pcm):
            speaking = playout.playing
            if speaking != self.turns.bot_speaking:
                self.turns.set_bot_speaking(speaking)
            if speaking:
                self.turns.feed_reference(playout.audio_at(now, self._frame_samples))
            for event in self.turns.feed(frame):
                self.caller_turns.on_event(event, now)
        self.caller_turns.tick(now)

    async def on_line_silence(self, seconds: float) -> None:
        """No audio came for `seconds` while the caller was mid-turn (the carrier stopped sending frames):
        that time is silence, as if it had arrived (recording included), so the turn ends and is answered."""
        self.on_audio(bytes(2 * round(seconds * self.sample_rate)))
        await self.observer.emit(ev.NoAudio(round(seconds * 1000)))

    async def on_dtmf(self, digits: str) -> None:
        """Keypad digits from an `input` callback: caller input for the dialogue (IVR enhancement)."""
        await self.observer.emit(ev.Dtmf(digits))
        if digits and self.state not in (CallState.HANDED_OFF, CallState.CLOSED):
            await self.caller_turns.keypad(digits)

    async def on_text(self, message: Metadata | Junk) -> None:
        """A text frame: a call UUID or metadata is kept; junk is logged and kept, never fatal. The record
        keeps a bounded number and size of them (agent/call/text_frames.py)."""
        admitted = self.text_frames.admit(message.size)
        stub: dict[str, Any] = {"truncated": True, "bytes": message.size}
        if isinstance(message, Metadata):
            if message.call_uuid and not self.record.cmiuuid:
                await self.observer.emit(ev.CarrierIdKnown(message.call_uuid))
            if admitted != "drop":
                whole = {"data": message.data} if admitted == "whole" else stub
                await self.observer.emit(
                    ev.TextFrameKept("metadata", {"call_uuid": message.call_uuid, **whole})
                )
            return
        if self.text_frames.received <= 1 or admitted != "drop":  # not one log line per junk frame
            log.warning("call %s: ignored a text frame that is neither a UUID nor JSON", self.call_id)
        if admitted != "drop":
            await self.observer.emit(
                ev.TextFrameKept("junk_text", {"text": message.text} if admitted == "whole" else stub)
            )

    # ------------------------------------------------------------------------- news and orders

    async def on_news(self, news: CallNews | None) -> None:
        """What the carrier reports beside the stream (already stored by its webhook): a transfer's fate,
        the caller's hang-up, keypad digits."""
        if isinstance(news, TransferOutcome) and self.actions.transfer_ringing:
            if news.answered:
                await self.actions.transfer_answered()
            else:
                await self.actions.transfer_failed(news.why)
        elif isinstance(news, Hangup) or (isinstance(news, TransferOutcome) and news.line_hung_up):
            self.caller_hung_up = True
        elif news is not None and not isinstance(news, TransferOutcome):
            await self.on_dtmf(news.digits)

    async def supervise(self, kind: str, department: str | None, user: str | None) -> None:
        """A supervisor's "transfer now" or "hang up" (see CallActions.supervise)."""
        await self.actions.supervise(kind, department, user)

    async def listened(self, user: str | None) -> None:
        """A supervisor started listening in."""
        await self.actions.listened(user)

    def take_rules(self, rules: list[CompiledRule]) -> None:
        """Reloaded escalation rules: the next turn uses them."""
        self.escalation.rules = rules

    # ------------------------------------------------------------------------------- the call ends

    async def close(self, reason: str, *, dropped: bool = False) -> None:
        """End the call: stop speaking, save the recording and the final state. Safe to call twice."""
        before = self.state
        if before is CallState.CLOSED:
            return
        self.states.move(CallState.CLOSED)
        self.link.close()
        # A turn still open ends as the stream did: its words are transcribed and kept, not answered.
        self.caller_turns.finish()
        self.caller_turns.cancel()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._finish_caller_turns()
        recording = self.line.recording
        if recording.failure is not None:
            await self.observer.emit(
                ev.RecordingFailed(recording.failure, round(recording.failed_at / self.sample_rate, 2))
            )
        # None when the disk refuses: the raw parts stay and the WAV follows (agent/records/recordings.py).
        recording_path = await self.runtime.recordings.finish(self.call_id, recording)
        peer_closed = reason.startswith("socket_closed")
        hung_up = self.caller_hung_up
        end_reason = "caller_hangup" if hung_up and peer_closed else reason
        if (truncated := self.text_frames.summary()) is not None:
            await self.observer.emit(ev.TextTruncated(truncated))
        outcome = call_outcome(
            handed_off=before is CallState.HANDED_OFF, bot_hung_up=before is CallState.HUNG_UP,
            dropped=dropped and not hung_up,
        )  # fmt: skip
        status = "dropped" if dropped and not hung_up else "completed"
        await self.observer.emit(
            ev.CallClosed(reason, dropped, end_reason, outcome, status, time.time(), recording_path)
        )
        if self.caller_hung_up and peer_closed and end_reason != "caller_hangup":
            # The carrier's hang-up news arrived while we were saving: it says who ended the call.
            await self.observer.emit(ev.CallerHungUpLate())
        self.runtime.calls.unregister(self.call_id)  # no await since the check above: no event slips between
        self.observer.notice(ev.CallEnded(end_reason))
        self.line.ended()
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

    def _recording_failed(self, error: str, at_sample: int) -> None:
        """The call's raw recording could not be written: the call goes on, unrecorded from here (the
        record gets a `recording/failed` event when the call ends)."""
        log.warning(
            "call %s: recording stopped at %.1f s: %s", self.call_id, at_sample / self.sample_rate, error
        )
        self.observer.notice(ev.RecordingStopped(error))
        self.runtime.recordings.write_failed(self.call_id, error)

    # ---------------------------------------------------------------------------------- its tasks

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
