"""CallSession: owns one live call, wires its stages, and keeps its record up to date as it happens.

This is the only place that knows the order of things on a call. Today: greet the caller from the
phrase cache, record both sides, take platform events and DTMF. Every step is written to the store
as it happens, so a dropped socket leaves a complete record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from agent.bot import BotConfig
from agent.runtime import Runtime
from agent.telephony.piopiy import (
    ControlVerb,
    Pcmo,
    StreamMetadata,
    UnknownText,
    encode_control,
    encode_pcmo,
    encode_stream_audio,
)
from agent.telephony.piopiy_webhooks import (
    CallEvent,
)
from pipelines.audio import CallRecording
from pipelines.playout import Playout

log = logging.getLogger(__name__)

SendText = Callable[[str], Awaitable[None]]
T = TypeVar("T")


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
    ) -> None:
        self.runtime = runtime
        self.call_id = call_id
        self.bot_name = bot_name
        self.bot = bot
        self.cmiuuid = cmiuuid
        self.sample_rate = bot.stream.voice_quality
        self._send_text = send_text
        self._send_lock = asyncio.Lock()
        self.socket_open = True
        self.state = "connecting"
        self.hangup_seen = False
        self.closed = False
        self._turn_idx = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._speech_task: asyncio.Task[None] | None = None
        self._recording_dir = runtime.recordings_dir / call_id
        self.recording = CallRecording(self._recording_dir, self.sample_rate)
        self.playout = Playout(self._send_audio_chunk, self.sample_rate)
        # Caller audio is the call's clock: map our monotonic clock onto caller sample positions.
        self._clock_mark = (time.monotonic(), 0)
        self.caller_bytes = 0

    # ----------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """The socket is open: mark the call live and greet the caller."""
        now = time.time()
        self.state = "greeting"
        await self._safe(self.runtime.store.update_call(self.call_id, status="active", connected_at=now))
        await self.event("stream", "connected", {"sample_rate": self.sample_rate})
        self._speech_task = self._spawn(self.say(self.bot.greeting, phrase_key="greeting"))

    async def close(self, reason: str, *, dropped: bool = False) -> None:
        """End the call: stop speaking, save the recording and the final state. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        self.socket_open = False
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
        await self.event("stream", "closed", {"reason": reason, "dropped": dropped})
        await self._safe(
            self.runtime.store.update_call(
                self.call_id,
                status="dropped" if dropped and not self.hangup_seen else "completed",
                end_reason=end_reason,
                ended_at=time.time(),
                recording_path=recording_path,
            )
        )
        if self.hangup_seen and peer_closed and end_reason != "caller_hangup":
            # PIOPIY's hangup event arrived while we were saving: it says who ended the call.
            await self._safe(self.runtime.store.update_call(self.call_id, end_reason="caller_hangup"))
        self.runtime.unregister(self.call_id)  # no await since the check above: no event slips between
        log.info("call %s ended: %s", self.call_id, end_reason)

    # ------------------------------------------------------------------------------- inbound

    def on_audio(self, pcm: bytes) -> None:
        """Caller audio (whole 16-bit samples) from the socket."""
        if not pcm:
            return
        self.caller_bytes += len(pcm)
        self.recording.add_caller(pcm)
        self._clock_mark = (time.monotonic(), self.recording.caller_samples)

    async def on_text(self, message: StreamMetadata | UnknownText) -> None:
        """A text frame: a call UUID or metadata is kept; junk is logged and kept, never fatal."""
        if isinstance(message, StreamMetadata):
            if message.call_uuid and not self.cmiuuid:
                self.cmiuuid = message.call_uuid
                await self._safe(self.runtime.store.update_call(self.call_id, cmiuuid=message.call_uuid))
            await self.event("stream", "metadata", {"call_uuid": message.call_uuid, "data": message.data})
        else:
            log.warning("call %s: ignored a text frame that is neither a UUID nor JSON", self.call_id)
            await self.event("stream", "junk_text", {"text": message.text})

    async def on_platform_event(self, event: CallEvent) -> None:
        """A PIOPIY event for this call (already stored by the webhook)."""
        if event.status_lower == "hangup":
            self.hangup_seen = True

    async def on_dtmf(self, digits: str) -> None:
        """Keypad digits from an `input` callback."""
        await self.event("dtmf", "digits", {"dtmf": digits})

    # ------------------------------------------------------------------------------ outbound

    async def say(self, text: str, *, phrase_key: str | None = None) -> None:
        """Speak `text` (from the phrase cache when fixed), record it as a bot turn."""
        cache = self.runtime.phrases[self.bot_name]
        pcm = await cache.get_or_synthesize(text, self.runtime.executor)
        idx = self._next_turn()
        started = time.time()
        self.state = "speaking"
        turn_id = await self._safe(
            self.runtime.store.add_turn(self.call_id, idx=idx, role="bot", text=text, started_at=started)
        )
        interrupted = False
        try:
            self.playout.reset()
            await self.playout.play(pcm)
        except asyncio.CancelledError:
            interrupted = True
            raise
        finally:
            heard = self.playout.cut() if interrupted else self.playout.sent_samples
            total = max(1, len(pcm) // 2)
            fields: dict[str, Any] = {"ended_at": time.time(), "interrupted": interrupted}
            if interrupted:
                fields["heard_text"] = text[: round(len(text) * heard / total)]
            if isinstance(turn_id, int):
                await asyncio.shield(self._safe(self.runtime.store.update_turn(turn_id, **fields)))
            self.state = "listening"

    async def send_control(self, verb: ControlVerb) -> None:
        """Send break / pause / resume / stop."""
        await self._send(encode_control(verb))

    async def send_pcmo(self, actions: Pcmo, *, reason: dict[str, Any]) -> None:
        """Run PCMO actions mid-call (transfer, music, hangup), recorded with their reason."""
        await self._send(encode_pcmo(actions))
        await self.action("pcmo", actions, reason)

    async def action(self, type_: str, payload: Any, reason: Any) -> None:
        """Record an action taken on this call."""
        await self._safe(self.runtime.store.add_action(self.call_id, type_, payload, reason, time.time()))

    async def event(self, source: str, status: str, payload: Any) -> None:
        """Record an event of ours on this call."""
        await self._safe(
            self.runtime.store.add_event(
                source=source,
                status=status,
                payload=payload,
                at=time.time(),
                call_id=self.call_id,
                cmiuuid=self.cmiuuid,
            )
        )

    # ------------------------------------------------------------------------------ internals

    async def _send_audio_chunk(self, chunk: bytes, start: float) -> None:
        at_sample = self._caller_sample_at(start)
        await self._send(encode_stream_audio(chunk, self.sample_rate))
        self.recording.add_bot(chunk, at_sample=at_sample)

    def _caller_sample_at(self, mono: float) -> int:
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

    def _next_turn(self) -> int:
        idx = self._turn_idx
        self._turn_idx += 1
        return idx

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task failed", self.call_id, exc_info=task.exception())

    async def _safe(self, coro: Awaitable[T]) -> T | None:
        """Store writes must never take a call down; a failure is logged and the call goes on."""
        try:
            return await coro
        except Exception:
            log.exception("call %s: could not write the call record", self.call_id)
            return None
