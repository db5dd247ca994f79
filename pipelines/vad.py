"""Frame-level facts about caller audio: is this 20 ms frame the caller speaking, how loud, is it echo.

This runs on every frame of every call, so it stays cheap (tens of µs per frame: webrtcvad's C code
and small numpy operations), synchronous and pure: no I/O, no clock. Time is the count of frames fed.

- `Vad`: webrtcvad on exact 20 ms frames at 8, 16 or 32 kHz; `frame_dbfs`: a frame's RMS level.
- `NoiseFloor`: the line's background level, so webrtcvad's "speech" on hiss and hum can be overruled.
- `EchoGuard`: telephone lines loop the bot's voice back into the caller channel, attenuated and a few
  tens of milliseconds late. Given the bot audio being played (the reference), a caller frame is echo
  when it is much quieter than the reference (`margin_db` below it; once the line's actual echo level
  has been measured, less than `double_talk_db` above that), or when it is quieter than the reference
  and correlates strongly with it within `max_lag_ms` (normalized cross-correlation on 40 ms windows,
  at 4 kHz to stay cheap). A caller talking over the bot is louder than the echo and unrelated to it,
  so it passes. Correlation catches hot lines whose echo is too loud for the level test: a plain delay
  scores ≈ 1.0, unrelated speech measured ≤ 0.53 at the 95th percentile (0.8 at worst, hence the level
  condition), and echo that arrives later than `max_lag_ms` is left to the level test alone.
- `SpeechGate`: all of the above combined into the one per-frame verdict turn-taking needs, and
  `SustainedSpeech`: has that speech lasted long enough (to start a turn, to barge in)?
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import webrtcvad

from pipelines.audio import SILENCE_DBFS

FRAME_MS = 20
"""Every frame here is 20 ms: webrtcvad accepts 10/20/30 ms, and 20 ms is the call pipeline's frame."""

VAD_RATES = (8000, 16000, 32000)
"""Sample rates accepted here: the telephone rates PIOPIY streams, and 32 kHz."""

_FULL_SCALE_POWER = 32768.0 * 32768.0
_ECHO_RATE = 4000  # the echo guard compares audio decimated to 4 kHz: speech's core band, 1/4 the work
_ECHO_WINDOW_MS = 40  # longer windows correlate unrelated speech less by chance
_REFERENCE_FLOOR_DBFS = -60.0  # quieter reference counts as "the bot is silent": nothing to echo
_MAX_AHEAD_MS = 1000  # reference fed further ahead of the caller audio than this is dropped
_LAG_LOCK_CORRELATION = 0.9  # frames this clearly echo tell the echo's delay
_LAG_MEMORY = 9  # the delay is the median of this many recent clear echo frames
_LAG_SLACK_MS = 5  # the echo's delay may wander this much (reference timing jitter)
_LOSS_MEMORY = 50  # the echo's loss is judged on this many recent clear echo frames
_LOSS_MIN_FRAMES = 5  # ... once there are this many

Samples = npt.NDArray[np.float32]


def frame_bytes(sample_rate: int) -> int:
    """Bytes in one 20 ms int16 frame at `sample_rate`; ValueError for a rate webrtcvad does not take."""
    if sample_rate not in VAD_RATES:
        raise ValueError(
            f"sample rate {sample_rate} Hz is not supported for voice activity detection; "
            f"use one of {VAD_RATES} (resample first)"
        )
    return sample_rate * FRAME_MS // 1000 * 2


def check_frame(frame: bytes, size: int, what: str = "frame") -> None:
    """Raise ValueError unless `frame` is exactly `size` bytes (one 20 ms int16 frame)."""
    if len(frame) != size:
        raise ValueError(
            f"{what} is {len(frame)} bytes; expected exactly {size} bytes (20 ms of 16-bit mono PCM). "
            "Reframe the stream with pipelines.audio.Reframer"
        )


def frame_dbfs(frame: bytes) -> float:
    """RMS level of int16 PCM in dBFS (the scale of `audio.rms_dbfs`, several times cheaper)."""
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    if samples.size == 0:
        return SILENCE_DBFS
    power = float(np.dot(samples, samples)) / samples.size
    if power <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(power / _FULL_SCALE_POWER))


class SpeechClassifier(Protocol):
    """What `SpeechGate` needs from a VAD: `Vad`, or a fake in tests."""

    def is_speech(self, frame: bytes) -> bool:
        """True for a speech frame."""
        ...


class Vad:
    """webrtcvad on exact 20 ms frames. `aggressiveness` 0 (lenient) to 3 (strict about non-speech).

    One instance per call: webrtcvad adapts to the stream it hears.
    """

    def __init__(self, sample_rate: int, aggressiveness: int = 2) -> None:
        self.frame_bytes = frame_bytes(sample_rate)
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"VAD aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        self.sample_rate = sample_rate
        self.aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: bytes) -> bool:
        """True when webrtcvad hears speech in this 20 ms frame; ValueError for a frame of another size."""
        check_frame(frame, self.frame_bytes)
        return bool(self._vad.is_speech(frame, self.sample_rate))


class NoiseFloor:
    """The line's background level in dBFS: the quietest frame of the last `window_s` seconds.

    Speech keeps dipping between words, so the floor stays under it, yet it finds steady noise (hum,
    hiss) within the window, from the very first frames of a call. webrtcvad, which calls noise speech
    while it adapts at the start and for a while after loud audio, can then be overruled on frames no
    louder than the noise.
    """

    def __init__(self, window_s: float = 2.0) -> None:
        self._window = max(1, round(window_s * 1000 / FRAME_MS))
        self._index = 0
        self._minima: deque[tuple[int, float]] = deque()  # (frame, level), levels increasing

    def update(self, dbfs: float) -> float:
        """Take the next frame's level; return the floor."""
        minima = self._minima
        while minima and minima[-1][1] >= dbfs:
            minima.pop()
        minima.append((self._index, dbfs))
        if minima[0][0] <= self._index - self._window:
            minima.popleft()
        self._index += 1
        return minima[0][1]


@dataclass(frozen=True)
class EchoCheck:
    """The echo guard's verdict on one caller frame, with the numbers behind it."""

    echo: bool
    relative_db: float | None
    """Caller frame level minus the loudest reference frame in the lag window; None: no reference."""
    correlation: float | None
    """Peak normalized cross-correlation with the reference; None when the level alone decided."""


class EchoGuard:
    """Tells the bot's own voice, looped back by the line, from the caller's.

    Feed it, once per 20 ms of the call, the bot audio being played (`add_reference`, optional: no
    reference means silence) and the caller frame (`add_caller`); then `check()` judges the latest
    caller frame. Reference fed ahead of the caller audio (up to 1 s) waits for its moment, so the
    window covers echo up to `max_lag_ms` late and, when the reference runs ahead, up to as early.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        margin_db: float = 10.0,
        min_correlation: float = 0.7,
        max_lag_ms: int = 60,
        double_talk_db: float = 6.0,
    ) -> None:
        self.frame_bytes = frame_bytes(sample_rate)
        self.margin_db = margin_db
        self.min_correlation = min_correlation
        self.double_talk_db = double_talk_db
        self._factor = sample_rate // _ECHO_RATE
        self._frame = _ECHO_RATE * FRAME_MS // 1000
        self._window = _ECHO_RATE * _ECHO_WINDOW_MS // 1000
        self._lag = _ECHO_RATE * max_lag_ms // 1000
        self._max_ahead = _ECHO_RATE * _MAX_AHEAD_MS // 1000
        self._floor_power = self._frame * _FULL_SCALE_POWER * 10 ** (_REFERENCE_FLOOR_DBFS / 10)
        self._caller: Samples = np.zeros(self._window, dtype=np.float32)
        self._caller_end = 0  # decimated samples of caller audio so far
        # The reference keeps its past back to the start of the oldest lag, zeros before the call began.
        self._ref: Samples = np.zeros(self._window + self._lag, dtype=np.float32)
        self._ref_end = 0
        self._lags: deque[int] = deque(maxlen=_LAG_MEMORY)  # delays (decimated samples) of clear echo
        self._lag_slack = _ECHO_RATE * _LAG_SLACK_MS // 1000
        self._losses: deque[float] = deque(maxlen=_LOSS_MEMORY)  # levels of clear echo vs. reference

    def _decimate(self, frame: bytes) -> Samples:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        decimated: Samples = samples.reshape(-1, self._factor).mean(axis=1, dtype=np.float32)
        return decimated

    def add_reference(self, frame: bytes) -> None:
        """The bot audio playing now (one 20 ms frame at the call rate)."""
        check_frame(frame, self.frame_bytes, "reference frame")
        if self._ref_end - self._caller_end >= self._max_ahead:
            return
        self._ref = np.concatenate((self._ref, self._decimate(frame)))
        self._ref_end += self._frame

    def add_caller(self, frame: bytes) -> None:
        """The caller frame heard now: advances the guard's clock by 20 ms."""
        check_frame(frame, self.frame_bytes, "caller frame")
        self._caller = np.concatenate((self._caller[self._frame :], self._decimate(frame)))
        self._caller_end += self._frame
        if self._ref_end < self._caller_end:  # no reference for this moment: the bot was silent
            gap = self._caller_end - self._ref_end
            self._ref = np.concatenate((self._ref, np.zeros(gap, dtype=np.float32)))
            self._ref_end = self._caller_end
        keep_from = self._caller_end - self._window - self._lag  # the oldest sample any lag looks at
        drop = len(self._ref) - (self._ref_end - keep_from)
        if drop > 0:
            self._ref = self._ref[drop:]

    def check(self) -> EchoCheck:
        """Is the latest caller frame the bot's echo? Cheap when the bot is silent."""
        ahead = min(self._ref_end - self._caller_end, self._lag)
        stop = self._caller_end + ahead - (self._ref_end - len(self._ref))
        reference = self._ref[:stop].astype(np.float64)
        power = np.concatenate(([0.0], np.cumsum(reference * reference)))
        # frame_power[k] is the reference frame at lag (self._lag + self._window - self._frame - k).
        frame_power = power[self._frame :] - power[: -self._frame]
        if float(frame_power.max()) < self._floor_power:
            return EchoCheck(echo=False, relative_db=None, correlation=None)
        window = self._caller.astype(np.float64)
        window_power = power[self._window :] - power[: -self._window]
        products = np.correlate(reference, window, mode="valid")  # products[k]: lag self._lag - k
        scale = np.sqrt(np.maximum(window_power, 1.0) * max(float(np.dot(window, window)), 1.0))
        scores = products / scale
        best = int(np.argmax(scores))
        correlation = float(scores[best])
        current = self._caller[-self._frame :]
        caller_power = max(float(np.dot(current, current)), 1e-9)
        relative_db = 10.0 * math.log10(caller_power / self._expected_power(frame_power))
        echo = relative_db < self.threshold_db or (relative_db < 0.0 and correlation >= self.min_correlation)
        if correlation >= _LAG_LOCK_CORRELATION and relative_db < 0.0:  # the bot alone: learn its echo
            if self._lags:  # relative_db was measured at the echo's delay
                self._losses.append(relative_db)
            self._lags.append(self._lag - best)
        return EchoCheck(echo=echo, relative_db=relative_db, correlation=correlation)

    @property
    def threshold_db(self) -> float:
        """Caller frames quieter than the reference by more than this are echo: `-margin_db` at first,
        then `double_talk_db` above the loudest echo measured (90th percentile of clear echo frames)."""
        if len(self._losses) < _LOSS_MIN_FRAMES:
            return -self.margin_db
        ordered = sorted(self._losses)
        return ordered[int(0.9 * (len(ordered) - 1))] + self.double_talk_db

    def _expected_power(self, frame_power: npt.NDArray[np.float64]) -> float:
        """The reference frame the caller frame's echo comes from: at the learnt lag once known, else
        the loudest one in the lag window (the safe side: more frames count as echo)."""
        if not self._lags:  # the loudest frame within max_lag_ms: it might be what comes back now
            # Never zero: the bot may be silent right here (a pause between clauses) while louder earlier.
            return max(float(frame_power[self._window - self._frame :].max()), 1e-9)
        lag = sorted(self._lags)[len(self._lags) // 2]
        centre = self._lag + self._window - self._frame - lag
        lo = max(0, centre - self._lag_slack)
        return max(float(frame_power[lo : centre + self._lag_slack + 1].max()), 1e-9)


@dataclass(frozen=True)
class FrameVerdict:
    """What `SpeechGate` concluded about one caller frame."""

    speech: bool
    """The caller is speaking: webrtcvad says so, the frame is loud enough, and it is not echo."""
    dbfs: float
    echo: bool
    """webrtcvad heard speech, but it is the bot's own voice coming back."""


class SpeechGate:
    """Is this caller frame the caller speaking? webrtcvad, overruled by level, noise floor and echo.

    A frame is speech when webrtcvad says so, it is at least `min_dbfs` loud and `min_snr_db` above
    the noise floor (webrtcvad calls noise speech while it adapts and for a while after loud audio,
    the bot's echo included), and the echo guard does not attribute it to the bot.
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        vad: SpeechClassifier,
        echo: EchoGuard,
        min_dbfs: float = -50.0,
        min_snr_db: float = 6.0,
    ) -> None:
        self.frame_bytes = frame_bytes(sample_rate)
        self.min_dbfs, self.min_snr_db = min_dbfs, min_snr_db
        self._vad, self._echo, self._floor = vad, echo, NoiseFloor()

    def add_reference(self, frame: bytes) -> None:
        """The bot audio being played now (see `EchoGuard.add_reference`)."""
        self._echo.add_reference(frame)

    def classify(self, frame: bytes) -> FrameVerdict:
        """Judge the next caller frame (exactly 20 ms; ValueError otherwise)."""
        check_frame(frame, self.frame_bytes)
        dbfs = frame_dbfs(frame)
        floor = self._floor.update(dbfs)
        self._echo.add_caller(frame)
        voiced = dbfs >= max(self.min_dbfs, floor + self.min_snr_db) and self._vad.is_speech(frame)
        echo = voiced and self._echo.check().echo  # the costly part runs on voiced frames only
        return FrameVerdict(speech=voiced and not echo, dbfs=dbfs, echo=echo)


class SustainedSpeech:
    """Fires once when speech has lasted `need` frames, gaps of up to `max_gap` frames not breaking it.

    Gap frames do not count toward `need`; a longer gap starts over.
    """

    def __init__(self, need: int, max_gap: int) -> None:
        self.need = max(1, need)
        self.max_gap = max_gap
        self.reset()

    def reset(self) -> None:
        """Forget the current run (and allow firing again)."""
        self.onset: int | None = None
        self._count = 0
        self._gap = 0
        self.fired = False

    def update(self, speech: bool, index: int) -> int | None:
        """Take frame `index`; return the run's onset frame the moment it lasts `need`, else None."""
        if not speech:
            self._gap += 1
            if self._gap > self.max_gap:
                self.onset, self._count = None, 0
            return None
        if self.onset is None:
            self.onset = index
        self._gap = 0
        self._count += 1
        if self._count >= self.need and not self.fired:
            self.fired = True
            return self.onset
        return None
