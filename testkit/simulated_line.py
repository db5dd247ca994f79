"""The caller's side of a simulated PIOPIY call: the stream socket, the line clock, bot playback.

The line runs on a clock counted in frames: each tick sends one caller frame (queued speech, or line
silence) and plays one frame of the bot's queued audio, so both directions stay sample-aligned at any
speed. `simulator.py` adds the platform's HTTP side (answer_url, events, CDR) on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypeVar

import numpy as np
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from agent.telephony.piopiy.codec import (
    PcmoFrame,
    PiopiyFormatError,
    StreamAudio,
    StreamControl,
    decode_outbound,
)
from pipelines.audio import read_wav, write_wav
from testkit.line_audio import (
    AudioQueue,
    CallEnded,
    LineNoise,
    SimulatorError,
    SimulatorTimeout,
    bot_audio_pcm,
    to_call_rate,
)

Control: TypeAlias = StreamControl | PcmoFrame
T = TypeVar("T")
_MAX_LAG_S = 0.5  # after a longer stall of the event loop the line slips instead of bursting the backlog


@dataclass(frozen=True)
class FrameError:
    """A frame from the server the platform could not use (`t` on the call clock)."""

    t: float
    frame: str | bytes
    reason: str


# ------------------------------------------------------------------------------------------- audio


class SimulatedLine:
    """The caller's end of the stream socket, paced by `speed` (1.0 real time, math.inf flat out).

    Faster than real time, the line never runs more than `max_lead_s` ahead of the wall clock since the
    socket opened (None: no limit), as a service reads no further ahead (security.max_audio_lead_s).

    `t` in the recorded frames is the call clock (`now()`): seconds of line audio since the stream opened.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        speed: float,
        frame_ms: int,
        line_noise_dbfs: float | None,
        seed: int,
        max_lead_s: float | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.speed = speed
        self.max_lead_s = max_lead_s  # faster than real time, the line stays at most this far ahead
        self.frame_s = frame_ms / 1000
        self.frame_bytes = sample_rate * frame_ms // 1000 * 2
        self.received_audio: list[tuple[float, StreamAudio]] = []
        self.controls: list[tuple[float, Control]] = []  # every non-audio frame, in order
        self.pcmo_frames: list[tuple[float, PcmoFrame]] = []
        self.errors: list[FrameError] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed_by: str | None = None  # "server", "caller", "drop" or "stop"
        self.frames_sent = 0
        self.paused = False  # after a `pause` control the line runs on but the socket gets nothing
        self._noise = LineNoise(line_noise_dbfs, seed)
        self._feed = AudioQueue()  # caller speech waiting to go out
        self._playback = AudioQueue()  # the platform's playback queue: chunks play one after another
        self._played = bytearray()  # bot audio actually played, gaps left out
        self.discarded_bytes = 0  # bot audio cut by `break` before it played
        self._caller_track = bytearray()
        self._bot_track = bytearray()
        self._ticks = 0
        self._ws: ClientConnection | None = None
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._closing_by: str | None = None
        self._closed = asyncio.Event()
        self._wake = asyncio.Event()
        self._last_bot_activity = 0.0  # event-loop time
        self._opened_at = 0.0  # event-loop time the socket opened

    def _attach(self, ws: ClientConnection) -> None:
        """Start the line on an open socket."""
        self._ws = ws
        self._opened_at = self._last_bot_activity = asyncio.get_running_loop().time()
        self._receiver = asyncio.create_task(self._receive(ws), name="simulated-line-receive")
        self._sender = asyncio.create_task(self._send_line(ws), name="simulated-line-send")

    async def _on_stream_closed(self) -> None:
        """Hook: the socket is gone and close_code/closed_by are set."""

    def now(self) -> float:
        """The call clock: seconds of line audio since the stream opened."""
        return self._ticks * self.frame_s

    @property
    def stream_closed(self) -> bool:
        """True once the stream socket is gone, whoever closed it."""
        return self._closed.is_set()

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    async def _send_line(self, ws: ClientConnection) -> None:
        """One tick per frame: send the caller frame, play one frame of bot audio, record both."""
        loop = asyncio.get_running_loop()
        fast = math.isinf(self.speed)
        step = self.frame_s if fast else self.frame_s / self.speed
        next_at = loop.time()
        with contextlib.suppress(ConnectionClosed):
            while True:
                excess = self._lead_over(loop)
                if fast and (self._feed.pending or self._playback.pending) and excess <= 0:
                    await asyncio.sleep(0)  # known audio on the line: play it out at once
                    next_at = loop.time() + step
                else:  # real pace (scaled by speed); flat out, idle time still passes in real time
                    delay = max(next_at - loop.time(), excess)
                    if delay > 0:
                        await asyncio.sleep(delay)
                    elif delay < -_MAX_LAG_S:
                        next_at = loop.time()
                    next_at += step
                frame = self._feed.take(self.frame_bytes)
                frame += self._noise.fill(self.frame_bytes - len(frame))
                if not self.paused:
                    await ws.send(frame)
                    self.frames_sent += 1
                bot = self._playback.take(self.frame_bytes)
                self._played += bot
                self._caller_track += frame
                self._bot_track += bot + bytes(self.frame_bytes - len(bot))
                self._ticks += 1
                if bot:
                    self._last_bot_activity = loop.time()
                self._notify()

    def _lead_over(self, loop: asyncio.AbstractEventLoop) -> float:
        """How far one more frame now would put the line beyond `max_lead_s` ahead of the wall clock."""
        if self.max_lead_s is None:
            return 0.0
        return self.now() + self.frame_s - (loop.time() - self._opened_at) - self.max_lead_s

    async def _receive(self, ws: ClientConnection) -> None:
        try:
            while True:
                self._on_frame(await ws.recv())
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else 1006
            self.close_reason = exc.rcvd.reason if exc.rcvd else ""
        finally:
            self.closed_by = self._closing_by or "server"
            if self._sender is not None:
                self._sender.cancel()
            self._feed.clear(failure=f"the stream closed ({self._why()})")
            self._closed.set()
            self._notify()
        await self._on_stream_closed()

    def _on_frame(self, message: str | bytes) -> None:
        t = self.now()
        if isinstance(message, bytes):
            self.errors.append(FrameError(t, message[:256], "binary frame: the platform takes JSON text"))
            return
        try:
            frame = decode_outbound(message)
        except PiopiyFormatError as exc:
            self.errors.append(FrameError(t, message[:1000], str(exc)))
            return
        if isinstance(frame, StreamAudio):
            self.received_audio.append((t, frame))
            try:
                self._playback.put(bot_audio_pcm(frame, self.sample_rate))
            except SimulatorError as exc:
                self.errors.append(FrameError(t, message[:200], str(exc)))
            self._last_bot_activity = asyncio.get_running_loop().time()
        else:
            self.controls.append((t, frame))
            if isinstance(frame, PcmoFrame):
                self.pcmo_frames.append((t, frame))
            elif frame.verb == "break":  # cut the chunk playing where it is, drop the queue
                self.discarded_bytes += self._playback.clear()
            elif frame.verb in ("pause", "resume"):
                self.paused = frame.verb == "pause"
            elif frame.verb == "stop" and self._stopper is None:
                # mod_audio_stream's stop ends the stream; the call itself stays up until hangup
                self._stopper = asyncio.create_task(self._close_stream("stop"), name="simulated-line-stop")
        self._notify()

    def _why(self) -> str:
        return f"closed by {self.closed_by}, code {self.close_code} {self.close_reason!r}"

    def _open_socket(self) -> ClientConnection:
        if self._ws is None or self.stream_closed:
            raise CallEnded(f"the stream is closed ({self._why()})")
        return self._ws

    async def _close_stream(self, by: str) -> None:
        """Close the socket with 1000 (unless gone already) and wait until the line has stopped."""
        await self._end_line(by, abort=False)

    async def drop(self) -> None:
        """Lose the socket without a close handshake (the server sees 1006); hang up later as usual."""
        await self._end_line("drop", abort=True)

    async def _end_line(self, by: str, *, abort: bool) -> None:
        ws, receiver = self._ws, self._receiver
        if ws is None or receiver is None:
            return
        if not self.stream_closed:
            self._closing_by = self._closing_by or by
        if self._sender is not None:
            self._sender.cancel()
            await asyncio.wait({self._sender})
        if abort and not self.stream_closed:
            ws.transport.abort()
        await ws.close(1000)  # a no-op once the connection is closed
        await asyncio.wait({receiver})
        stopper = self._stopper
        if stopper is not None and stopper is not asyncio.current_task():
            await asyncio.wait({stopper})
        for task in (receiver, stopper):
            if task is not None and task.done() and not task.cancelled() and task.exception():
                raise RuntimeError(f"the simulated line failed in {task.get_name()}") from task.exception()

    # ---------------------------------------------------------------------------------- caller

    async def say_pcm(self, pcm: bytes, rate: int) -> None:
        """Speak L16 mono audio at `rate` (resampled to the call rate); returns once it is all sent."""
        self._open_socket()
        done = asyncio.get_running_loop().create_future()
        self._feed.put(to_call_rate(pcm, rate, self.sample_rate), done)
        try:
            await done
        except asyncio.CancelledError:
            self._feed.withdraw(done)  # a cancelled speaker stops talking mid-utterance
            raise

    async def say_wav(self, path: str | Path) -> None:
        """Speak a PCM WAV file (any rate, channels mixed down); returns once it is all sent."""
        try:
            pcm, rate = read_wav(path)
        except (OSError, ValueError) as exc:
            raise SimulatorError(f"cannot read {path}: {exc}") from None
        await self.say_pcm(pcm, rate)

    async def silence(self, seconds: float) -> None:
        """Stay quiet for `seconds` of line time (line noise if configured)."""
        await self.say_pcm(self._noise.fill(2 * round(seconds * self.sample_rate)), self.sample_rate)

    async def send_text(self, text: str) -> None:
        """Send a raw text frame, outside the line's pacing (junk tests)."""
        await self._send_raw(text)

    async def send_bytes(self, raw: bytes) -> None:
        """Send a raw binary frame, outside the line's pacing and the recording (junk tests)."""
        await self._send_raw(raw)

    async def _send_raw(self, data: str | bytes) -> None:
        try:
            await self._open_socket().send(data)
        except ConnectionClosed:
            raise CallEnded(f"the stream is closed ({self._why()})") from None

    # ------------------------------------------------------------------------------------- bot

    def bot_audio(self) -> bytes:
        """Bot audio actually played on the line so far (L16 at the call rate, gaps left out)."""
        return bytes(self._played)

    def caller_audio(self) -> bytes:
        """The caller side of the line so far, line silence included (L16 at the call rate)."""
        return bytes(self._caller_track)

    def write_recording(self, path: str | Path) -> Path:
        """Two-channel 16-bit WAV at the call rate: caller left, bot right, aligned on the call clock."""
        left = np.frombuffer(bytes(self._caller_track), dtype="<i2")
        right = np.frombuffer(bytes(self._bot_track), dtype="<i2")
        stereo = np.column_stack((left, right)).astype("<i2")  # same length: one frame each per tick
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_wav(target, stereo.tobytes(), self.sample_rate, channels=2)
        return target

    async def _wait(self, check: Callable[[], T | None], limit_s: float, what: str) -> T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while (result := check()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SimulatorTimeout(f"no {what} within {limit_s:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), remaining)
        return result

    async def wait_for_bot_audio(self, timeout: float = 10.0, *, since: float | None = None) -> StreamAudio:
        """The first `streamAudio` received (at call time >= `since` if given)."""

        def check() -> StreamAudio | None:
            found = next((f for t, f in self.received_audio if since is None or t >= since), None)
            if found is None and self.stream_closed:
                raise CallEnded(f"no bot audio before the stream closed ({self._why()})")
            return found

        return await self._wait(check, timeout, "bot audio")

    async def wait_for_time(self, t: float, timeout: float = 60.0) -> None:
        """Wait until the call clock (`now()`) reaches `t` seconds."""
        await self._wait(lambda: True if self.now() >= t else None, timeout, f"call time {t:.2f} s")

    async def wait_until_bot_silent(self, quiet_s: float = 0.6, timeout: float = 30.0) -> None:
        """Wait until nothing plays and no audio arrived for `quiet_s` wall seconds (or the stream ends)."""
        loop = asyncio.get_running_loop()

        def check() -> bool | None:
            if self.stream_closed:
                return True
            quiet = not self._playback.pending and loop.time() - self._last_bot_activity >= quiet_s
            return True if quiet else None

        await self._wait(check, timeout, "bot silence")

    async def wait_for_control(self, predicate: Callable[[Control], bool], timeout: float = 10.0) -> Control:
        """The first control or PCMO frame received (ever) that matches `predicate`."""

        def check() -> Control | None:
            found = next((f for _, f in self.controls if predicate(f)), None)
            if found is None and self.stream_closed:
                raise CallEnded(f"no matching control before the stream closed ({self._why()})")
            return found

        return await self._wait(check, timeout, "matching control")

    async def wait_closed(self, timeout: float = 10.0) -> int | None:
        """Wait until the stream socket is closed; returns the close code."""
        await self._wait(lambda: True if self.stream_closed else None, timeout, "stream close")
        return self.close_code
