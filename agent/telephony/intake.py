"""One call's incoming stream measured against the call's own wall clock: pacing, silent line, idle line.

PIOPIY sends caller audio in real time, so the audio received since the stream opened tracks the time
elapsed. Three things follow from comparing the two:
- audio far ahead of the clock (`hold_s`) comes from a peer flooding the service: reading it as fast as
  it comes would spend the event loop and the model pool on one call. The stream is then read no faster
  than real time (TCP pushes back on the peer); nothing is dropped;
- no audio for a while (`missing_s`) while the caller is mid-turn: the carrier stopped sending frames
  (silence suppression, a stall). That time counts as silence, so the turn can end and the bot answer;
- no frame at all for long (`idle_s`): the stream is dead and is closed.
Pure bookkeeping on a monotonic clock passed in, so it is tested at CPU speed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamIntake:
    """The intake clock of one stream; times are monotonic seconds, `opened_at` when the socket opened."""

    sample_rate: int
    opened_at: float
    max_lead_s: float | None = 2.0
    received_s: float = 0.0
    """Caller audio received so far (seconds at the call rate)."""
    last_frame_at: float = 0.0
    """When the last frame (audio or text) came."""
    last_audio_at: float = 0.0
    """When the last audio came."""
    silent_until: float = 0.0
    """Line time up to which missing audio was already counted as silence."""
    paced: bool = False
    """Audio came too far ahead at least once (the call's `stream/paced` event is recorded once)."""
    timed_out: bool = False
    """The stream was closed for sending no frame for too long."""

    def __post_init__(self) -> None:
        self.last_frame_at = max(self.last_frame_at, self.opened_at)
        self.last_audio_at = max(self.last_audio_at, self.opened_at)
        self.silent_until = max(self.silent_until, self.opened_at)

    def lead_s(self, now: float) -> float:
        """How far the audio received runs ahead of the time since the stream opened (negative: behind)."""
        return self.received_s - (now - self.opened_at)

    def hold_s(self, samples: int, now: float) -> float:
        """How long to wait before taking `samples` more audio so it stays within `max_lead_s`; 0: take it."""
        if self.max_lead_s is None:
            return 0.0
        return max(0.0, self.lead_s(now) + samples / self.sample_rate - self.max_lead_s)

    def audio(self, samples: int, now: float) -> None:
        """`samples` of caller audio were taken at `now`."""
        self.received_s += samples / self.sample_rate
        self.last_frame_at = self.last_audio_at = now

    def frame(self, now: float) -> None:
        """A frame came at `now` (its audio, if any, is counted by `audio` once taken)."""
        self.last_frame_at = now

    def covered_until(self) -> float:
        """Up to when the line's time is accounted for: by audio frames, by the audio they carried (which
        may run ahead), or by silence already counted."""
        return max(self.last_audio_at, self.opened_at + self.received_s, self.silent_until)

    def missing_s(self, now: float) -> float:
        """Line time with no audio, not yet counted as silence."""
        return max(0.0, now - self.covered_until())

    def count_silence(self, now: float) -> float:
        """Count the missing line time up to `now` as silence; returns how much that was."""
        missing = self.missing_s(now)
        self.silent_until = now
        return missing

    def idle_s(self, now: float) -> float:
        """Time since the last frame of any kind."""
        return now - self.last_frame_at

    def next_check_s(self, now: float, *, idle_timeout_s: float, silence_s: float | None) -> float:
        """How long the stream may stay quiet before something is due: the idle timeout, or (`silence_s`:
        a caller turn is open) missing audio that long counts as silence."""
        due = self.last_frame_at + idle_timeout_s
        if silence_s is not None:
            due = min(due, self.covered_until() + silence_s)
        return max(0.0, due - now)
