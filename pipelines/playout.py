"""Paced playback: bot audio leaves in phrase-sized chunks, never far ahead of what the caller hears.

The platform queues every chunk it receives, and only `break` can cut what it holds, so we keep at
most about one chunk queued ahead of real time: barge-in then silences the bot within a chunk at worst,
and we always know how much of a reply the caller actually heard.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

SendChunk = Callable[[bytes, float], Awaitable[None]]


@dataclass
class _Segment:
    start: float  # when the platform starts playing it (our clock)
    samples: int
    pcm: bytes = b""


class Playout:
    """Sends L16 audio at `sample_rate` in chunks of `chunk_s`, paced with `lead_s` of look-ahead."""

    def __init__(
        self,
        send: SendChunk,
        sample_rate: int,
        *,
        chunk_s: float = 0.6,
        lead_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.05 <= chunk_s <= 3.0:
            raise ValueError("chunk_s must be between 0.05 and 3 seconds")
        self._send = send
        self.sample_rate = sample_rate
        self.chunk_bytes = int(chunk_s * sample_rate) * 2
        self.lead_s = chunk_s if lead_s is None else lead_s
        self._clock = clock
        self._segments: list[_Segment] = []
        self._free_at = 0.0  # when the platform's queue runs dry
        self.sent_samples = 0
        self.chunks_sent = 0

    @property
    def playing(self) -> bool:
        """True while sent audio is still playing on the line."""
        return self._clock() < self._free_at

    def heard_samples(self) -> int:
        """Samples of everything sent so far that the caller has heard by now."""
        now = self._clock()
        heard = 0
        for seg in self._segments:
            heard += max(0, min(seg.samples, int((now - seg.start) * self.sample_rate)))
        return heard

    async def play(self, pcm: bytes, *, until_played: bool = True) -> None:
        """Send `pcm` paced near real time; returns when it has finished playing on the line.

        With `until_played=False` it returns once the last chunk is sent (about one chunk ahead), so the
        next clause of a reply queues behind it without a gap; `drain()` then waits for the end.
        Cancelling stops sending at once; call `cut()` (and send `break`) to silence what is queued.
        """
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        for offset in range(0, len(pcm), self.chunk_bytes):
            chunk = pcm[offset : offset + self.chunk_bytes]
            wait = max(self._clock(), self._free_at) - self.lead_s - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
            start = max(self._clock(), self._free_at)
            await self._send(chunk, start)
            samples = len(chunk) // 2
            self._segments.append(_Segment(start, samples, chunk))
            self._free_at = start + samples / self.sample_rate
            self.sent_samples += samples
            self.chunks_sent += 1
        if until_played:
            await self.drain()

    async def drain(self) -> None:
        """Wait until everything sent has played on the line."""
        remaining = self._free_at - self._clock()
        if remaining > 0:
            await asyncio.sleep(remaining)

    def audio_at(self, t: float, samples: int) -> bytes:
        """The audio playing on the line from time `t` for `samples` (silence where nothing plays).

        The echo guard's reference: what the caller's line may be echoing back right now.
        """
        out = bytearray(samples * 2)
        for seg in self._segments:
            offset = round((t - seg.start) * self.sample_rate)
            lo, hi = max(0, offset), min(seg.samples, offset + samples)
            if lo < hi and seg.pcm:
                out[(lo - offset) * 2 : (hi - offset) * 2] = seg.pcm[lo * 2 : hi * 2]
        return bytes(out)

    def cut(self) -> int:
        """Forget what is queued (the caller will hear no more of it); returns the samples heard."""
        heard = self.heard_samples()
        now = self._clock()
        self._segments = [_Segment(now - heard / self.sample_rate, heard)] if heard else []
        self._free_at = min(self._free_at, now)
        return heard

    def reset(self) -> None:
        """Start counting a new utterance (heard/sent counters back to zero)."""
        self._segments = []
        self.sent_samples = 0
