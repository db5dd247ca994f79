"""CallLine: one call's audio, both ways: paced playout, the two-channel recording, listen-in, the clock.

Caller audio is the call's clock: our monotonic clock is mapped onto caller sample positions, so the
bot's audio lands in the recording where the caller heard it.
"""

from __future__ import annotations

import time

from agent.records.recordings import GuardedRecording
from agent.telephony.carrier import CarrierLink
from agent.worker.listen import BOT, CALLER, ListenHub
from pipelines.playout import Playout


class CallLine:
    """The audio of one call (see the module docstring)."""

    def __init__(
        self,
        link: CarrierLink,
        recording: GuardedRecording,
        listen: ListenHub,
        *,
        call_id: str,
        sample_rate: int,
    ) -> None:
        self.link = link
        self.recording = recording
        self._listen = listen
        self.call_id = call_id
        self.sample_rate = sample_rate
        self.playout = Playout(self._send, sample_rate)
        self._clock_mark = (time.monotonic(), 0)
        self.first_audio_at: float | None = None  # monotonic time the current reply's first chunk left

    @property
    def playing(self) -> bool:
        """The bot's audio is still playing on the line."""
        return self.playout.playing

    @property
    def last_audio_at(self) -> float:
        """Monotonic time the latest caller audio arrived (the turn detector's "now")."""
        return self._clock_mark[0]

    def caller_audio(self, pcm: bytes) -> float:
        """Caller audio arrived: recorded, heard by listeners, and the clock set; returns now."""
        self.recording.add_caller(pcm)
        self._listen.feed(self.call_id, CALLER, self.sample_rate, pcm)
        now = time.monotonic()
        self._clock_mark = (now, self.recording.caller_samples)
        return now

    def caller_sample_at(self, mono: float) -> int:
        """Position on the caller timeline (the recording's clock) of a monotonic time."""
        t, samples = self._clock_mark
        return max(0, samples + int((mono - t) * self.sample_rate))

    def new_reply(self) -> None:
        """A reply begins: the playout starts afresh."""
        self.playout.reset()
        self.first_audio_at = None

    def cut(self) -> int:
        """A reply was interrupted: returns the samples the caller heard; the rest never reached them,
        so it leaves the recording too."""
        heard = self.playout.cut()
        self.recording.cut_bot(self.caller_sample_at(time.monotonic()))
        return heard

    def ended(self) -> None:
        """The call ended: listeners get the end of the stream."""
        self._listen.ended(self.call_id, self.sample_rate)

    async def _send(self, chunk: bytes, start: float) -> None:
        at_sample = self.caller_sample_at(start)
        await self.link.send_audio(chunk)
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        self.recording.add_bot(chunk, at_sample=at_sample)
        self._listen.feed(self.call_id, BOT, self.sample_rate, chunk)
