"""The audio of a simulated line, and the simulator's errors: caller audio at the call's rate, the bot's
streamAudio decoded, line noise, and the queue of caller audio the line plays out frame by frame."""

from __future__ import annotations

import asyncio
import tempfile
from collections import deque

import numpy as np

from agent.telephony.piopiy.codec import StreamAudio
from pipelines.audio import read_wav, resample


class SimulatorError(Exception):
    """The simulated platform could not do what was asked; the message says why."""


class CallEnded(SimulatorError):
    """The stream socket is gone (hung up, dropped, or closed by the server)."""


class SimulatorTimeout(SimulatorError, TimeoutError):
    """A wait on the simulated call ran out of time."""


def to_call_rate(pcm: bytes, rate: int, call_rate: int) -> bytes:
    """L16 mono at `rate` → the call rate; an odd trailing byte is dropped."""
    try:
        return resample(pcm[: len(pcm) - len(pcm) % 2], rate, call_rate)
    except ValueError as exc:
        raise SimulatorError(f"cannot play {rate} Hz audio on a {call_rate} Hz call: {exc}") from None


def bot_audio_pcm(frame: StreamAudio, call_rate: int) -> bytes:
    """A `streamAudio` payload as L16 at the call rate, as the platform would play it."""
    if frame.audio_type == "raw":
        return to_call_rate(frame.audio, frame.sample_rate, call_rate)
    if frame.audio_type == "wav":
        with tempfile.NamedTemporaryFile(suffix=".wav") as tmp:
            tmp.write(frame.audio)
            tmp.flush()
            try:
                pcm, rate = read_wav(tmp.name)
            except ValueError as exc:
                raise SimulatorError(f"streamAudio wav payload: {exc}") from None
        return to_call_rate(pcm, rate, call_rate)
    raise SimulatorError(f"streamAudio audioDataType {frame.audio_type!r} is not played by the simulator")


class LineNoise:
    """Idle line fill: digital silence, or low-level white noise at `dbfs` RMS (seeded: reproducible)."""

    def __init__(self, dbfs: float | None = None, seed: int = 0) -> None:
        self._rms = None if dbfs is None else 32768.0 * 10 ** (dbfs / 20)
        self._rng = np.random.default_rng(seed)

    def fill(self, nbytes: int) -> bytes:
        """`nbytes` of idle line audio."""
        if self._rms is None:
            return bytes(nbytes)
        noise = self._rng.normal(0.0, self._rms, nbytes // 2)
        return np.clip(noise.round(), -32768, 32767).astype("<i2").tobytes()


class AudioQueue:
    """L16 pieces taken out frame by frame; a piece's future resolves once its last byte is taken."""

    def __init__(self) -> None:
        self._pieces: deque[tuple[memoryview, asyncio.Future[None] | None]] = deque()
        self._offset = 0  # bytes of the first piece already taken

    @property
    def pending(self) -> bool:
        """True while audio is queued."""
        return bool(self._pieces)

    def put(self, pcm: bytes, done: asyncio.Future[None] | None = None) -> None:
        """Queue a piece; `done` resolves when it has all been taken."""
        if pcm:
            self._pieces.append((memoryview(pcm), done))
        elif done is not None and not done.done():
            done.set_result(None)

    def take(self, nbytes: int) -> bytes:
        """Up to `nbytes` from the head of the queue, across piece boundaries (short when it runs dry)."""
        out = bytearray()
        while self._pieces and len(out) < nbytes:
            piece, done = self._pieces[0]
            part = piece[self._offset : self._offset + nbytes - len(out)]
            out += part
            self._offset += len(part)
            if self._offset >= len(piece):
                self._pieces.popleft()
                self._offset = 0
                if done is not None and not done.done():
                    done.set_result(None)
        return bytes(out)

    def withdraw(self, done: asyncio.Future[None]) -> None:
        """Drop the piece `done` belongs to, even when it is partly taken."""
        for index, (_, piece_done) in enumerate(self._pieces):
            if piece_done is done:
                del self._pieces[index]
                self._offset = 0 if index == 0 else self._offset
                return

    def clear(self, failure: str | None = None) -> int:
        """Drop everything (futures fail with CallEnded(failure) if given); returns the bytes dropped."""
        dropped = sum(len(piece) for piece, _ in self._pieces) - self._offset
        for _, done in self._pieces:
            if done is not None and not done.done():
                if failure is None:
                    done.set_result(None)
                else:
                    done.set_exception(CallEnded(failure))
        self._pieces.clear()
        self._offset = 0
        return dropped
