"""Turn-taking: when the caller starts and stops talking, and when they talk over the bot.

`TurnDetector` takes caller audio in 20 ms frames and returns small events: `SpeechStarted`, then
`SpeechPaused` at a short pause (the turn's audio so far, for speculative ASR), `SpeechResumed` if they
go on, and `TurnEnded` with the whole turn (pre-roll included, so first syllables reach ASR) once the
silence has lasted `end_silence_ms` (or at once, by `finish`, when the audio ends: a hang-up); speech
shorter than `min_turn_ms` ends as `TurnDiscarded`. Time is the count of frames fed (`at_ms`: when the
event was decided, on the caller audio's clock), so the detector is pure, synchronous and deterministic.

Each decision is a small policy object: `SpeechGate` and `SustainedSpeech` from `pipelines.vad` (is
this frame the caller speaking, not noise or the bot's echo? has speech lasted long enough to start a
turn, or to barge in?), `SilenceEndpointer` (pause and end of turn by trailing silence) and
`BargeInPolicy` (may the caller cut the bot now?).

Barge-in and backchannels. While the bot speaks (`set_bot_speaking(True)`), caller speech that lasts
`barge_in_ms` raises `BargeIn`, and the session cuts the bot. What does not count:
- the bot's echo: frames the echo guard attributes to the reference (`feed_reference`) are silence
  for every decision here, turns included;
- short acknowledgements ("mm-hmm", "yeah"): most are shorter than `barge_in_ms` and never fire;
- murmurs: once the caller has spoken on their own, frames more than `backchannel_margin_db` below
  their usual level neither count toward a barge-in nor interrupt the count.
A longer acknowledgement ("okay, got it") still fires. Its words still end as a turn, so the session
transcribes it and, when `is_backchannel(text)` says it was only an acknowledgement, resumes the reply
it cut instead of answering; a `TurnDiscarded` after a `BargeIn` means the same.

Over 400 lines: one detector and the small policies it composes, kept together so the order of its
decisions reads in one place.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from pipelines.vad import (
    FRAME_MS,
    EchoGuard,
    SpeechClassifier,
    SpeechGate,
    SustainedSpeech,
    Vad,
    frame_bytes,
)


@dataclass(frozen=True)
class TurnConfig:
    """Turn-taking timings and thresholds. Durations are rounded up to whole 20 ms frames."""

    start_ms: int = 160
    """Speech needed to start a turn: 8 frames filter clicks and webrtcvad's one-frame flickers."""
    end_silence_ms: int = 700
    """Silence that ends a turn: longer waits out hesitations, shorter answers sooner (bench-tuned)."""
    pause_ms: int = 240
    """Silence that is a pause (speculative ASR): longer than most gaps between words, well before 700."""
    preroll_ms: int = 300
    """Audio kept before the detected onset: webrtcvad misses soft onsets ("h", "s", "f")."""
    tail_ms: int = 200
    """Silence kept after the last speech. At most `pause_ms`: when a turn ends at its pause, its audio
    is exactly what `SpeechPaused` carried, so the speculative transcript is the final one."""
    min_turn_ms: int = 250
    """Speech spanning less than this is noise (cough, click, line burst): `TurnDiscarded`."""
    max_turn_s: float = 30.0
    """A turn is ended (`forced=True`) after this long even if the caller never pauses."""
    barge_in_ms: int = 200
    """Caller speech over the bot that lasts this long cuts the bot."""
    max_gap_ms: int = 100
    """Gaps this short (stop consonants, dips) neither break nor count toward start_ms / barge_in_ms."""
    echo_margin_db: float = 10.0
    """A caller frame this far below the bot reference is echo, until the line's echo level is measured.
    Hybrids return the bot ≥ 6 dB down (G.168), usually 15-25 dB; an interrupting caller is louder."""
    echo_correlation: float = 0.7
    """A caller frame quieter than the reference and correlating this well with it is echo."""
    echo_max_lag_ms: int = 60
    """How late (or early) the echo may arrive relative to the reference fed."""
    backchannel_margin_db: float = 15.0
    """Caller speech this far below their usual loud syllables (a murmured "mm-hmm") does not barge in."""
    min_speech_dbfs: float = -50.0
    """Frames quieter than this are never speech, whatever webrtcvad says."""
    min_snr_db: float = 6.0
    """Frames less than this above the line's noise floor are never speech."""
    vad_aggressiveness: int = 2
    """webrtcvad mode, 0-3: 2 keeps soft onsets and rejects hum and steady noise."""

    def __post_init__(self) -> None:
        for name in ("start_ms", "end_silence_ms", "pause_ms", "min_turn_ms", "max_turn_s", "barge_in_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TurnConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("preroll_ms", "tail_ms", "max_gap_ms", "echo_margin_db", "echo_max_lag_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"TurnConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.tail_ms <= self.pause_ms < self.end_silence_ms:
            raise ValueError(
                f"TurnConfig needs tail_ms ({self.tail_ms}) <= pause_ms ({self.pause_ms}) "
                f"< end_silence_ms ({self.end_silence_ms})"
            )
        if self.max_turn_s * 1000 <= self.start_ms:
            raise ValueError(f"TurnConfig.max_turn_s ({self.max_turn_s}) must exceed start_ms")


def _frames(ms: float) -> int:
    return max(0, math.ceil(ms / FRAME_MS))


# ------------------------------------------------------------------------------------------ events


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started a turn: speech from `onset_ms` lasted `start_ms` (decided at `at_ms`)."""

    at_ms: int
    onset_ms: int


@dataclass(frozen=True)
class SpeechPaused:
    """A short pause inside a turn: `audio` is the turn so far (pre-roll and tail), for speculative ASR."""

    at_ms: int
    audio: bytes = field(repr=False)


@dataclass(frozen=True)
class SpeechResumed:
    """The caller went on after a `SpeechPaused`: the speculative transcript is stale."""

    at_ms: int


@dataclass(frozen=True)
class TurnEnded:
    """A turn: speech from `start_ms` to `end_ms` (when it actually stopped), decided at `at_ms`.

    `audio` runs from `preroll_ms` before `start_ms` to `tail_ms` after `end_ms`. `forced`: `max_turn_s`
    ended it (mid-speech, `end_ms` == `at_ms` and there is no tail). `early`: `TurnDetector.end_turn`
    ended it during a pause, before `end_silence_ms` (the caller's words already made a whole turn).
    """

    start_ms: int
    end_ms: int
    audio: bytes = field(repr=False)
    at_ms: int
    forced: bool = False
    early: bool = False


@dataclass(frozen=True)
class TurnDiscarded:
    """Speech that started a turn but was too short to be one (a cough, a click): nothing to transcribe."""

    reason: str
    at_ms: int


@dataclass(frozen=True)
class BargeIn:
    """The caller has talked over the bot since `onset_ms` for `barge_in_ms`: cut the bot (at `at_ms`)."""

    at_ms: int
    onset_ms: int


TurnEvent = SpeechStarted | SpeechPaused | SpeechResumed | TurnEnded | TurnDiscarded | BargeIn


# ---------------------------------------------------------------------------------------- policies


EndpointSignal = Literal["pause", "resume", "end"]


class SilenceEndpointer:
    """Ends a turn after `end` frames of silence; signals a pause after `pause` frames, and a resume
    when speech comes back after a signalled pause.

    One speech frame alone does not break the silence (webrtcvad flickers on breaths and line noise):
    speech counts again after `confirm` speech frames in a row.
    """

    def __init__(self, pause: int, end: int, confirm: int = 2) -> None:
        self.pause, self.end, self.confirm = pause, end, confirm
        self.start(0)

    def start(self, last_speech: int) -> None:
        """A turn began; `last_speech` is its latest speech frame."""
        self.last_speech = last_speech
        self._run = 0
        self._paused = False

    @property
    def paused(self) -> bool:
        """A pause was signalled and speech has not resumed."""
        return self._paused

    def update(self, speech: bool, index: int) -> EndpointSignal | None:
        """Take frame `index` of the turn; return a signal when one is due."""
        self._run = self._run + 1 if speech else 0
        if self._run >= self.confirm or (speech and index - self.last_speech == 1):
            self.last_speech = index
            if self._paused:
                self._paused = False
                return "resume"
            return None
        silence = index - self.last_speech
        if silence >= self.end:
            return "end"
        if silence >= self.pause and not self._paused and not speech:  # a lone speech frame: wait
            self._paused = True
            return "pause"
        return None


class BargeInPolicy:
    """Decides when caller speech over the bot is an interruption (see the module docstring).

    Knows the caller's voice level (the 90th percentile of their recent speech frames while the bot
    was silent: their stressed syllables), so a murmur far below it can be told from an interruption.
    """

    _LEVEL_FRAMES = 500  # the caller's last 10 s of speech
    _LEVEL_PERCENTILE = 0.9

    def __init__(self, need: int, max_gap: int, backchannel_margin_db: float) -> None:
        self._sustained = SustainedSpeech(need, max_gap)
        self.margin_db = backchannel_margin_db
        self._levels: deque[float] = deque(maxlen=self._LEVEL_FRAMES)
        self._threshold: float | None = None
        self.bot_speaking = False

    def set_bot_speaking(self, speaking: bool) -> None:
        """The bot started or stopped speaking; each utterance can be interrupted once."""
        self.bot_speaking = speaking
        self._sustained.reset()
        self._threshold = None
        if speaking and self._levels:
            level = sorted(self._levels)[int(self._LEVEL_PERCENTILE * (len(self._levels) - 1))]
            self._threshold = level - self.margin_db

    def update(self, speech: bool, dbfs: float, index: int) -> int | None:
        """Take caller frame `index` (speech = not silence and not echo); return the onset on barge-in."""
        if not self.bot_speaking:
            if speech:
                self._levels.append(dbfs)
            return None
        if speech and self._threshold is not None and dbfs < self._threshold:
            return None  # a murmur neither counts nor breaks the run: a soft start is late, not lost
        return self._sustained.update(speech, index)


# ---------------------------------------------------------------------------------------- detector


class TurnDetector:
    """Turn-taking for one call's caller audio (see the module docstring). Not thread-safe."""

    def __init__(
        self, sample_rate: int, config: TurnConfig | None = None, *, vad: SpeechClassifier | None = None
    ) -> None:
        self.config = cfg = config or TurnConfig()
        self.sample_rate = sample_rate
        self.frame_bytes = frame_bytes(sample_rate)
        echo = EchoGuard(
            sample_rate, margin_db=cfg.echo_margin_db, min_correlation=cfg.echo_correlation,
            max_lag_ms=cfg.echo_max_lag_ms,
        )  # fmt: skip
        vad = vad or Vad(sample_rate, cfg.vad_aggressiveness)
        self._gate = SpeechGate(
            sample_rate, vad=vad, echo=echo, min_dbfs=cfg.min_speech_dbfs, min_snr_db=cfg.min_snr_db
        )
        max_gap = _frames(cfg.max_gap_ms)
        self._start = SustainedSpeech(_frames(cfg.start_ms), max_gap)
        self._endpointer = SilenceEndpointer(_frames(cfg.pause_ms), _frames(cfg.end_silence_ms))
        self._barge_in = BargeInPolicy(_frames(cfg.barge_in_ms), max_gap, cfg.backchannel_margin_db)
        self._preroll, self._tail = _frames(cfg.preroll_ms), _frames(cfg.tail_ms)
        self._min_turn, self._max_turn = _frames(cfg.min_turn_ms), _frames(cfg.max_turn_s * 1000)
        # Recent frames: the pre-roll plus a start run with its gaps.
        self._recent: deque[bytes] = deque(maxlen=self._preroll + 3 * self._start.need + max_gap)
        self._index = 0  # frames fed so far
        self._turn: list[bytes] | None = None  # frames of the turn in progress, pre-roll first
        self._turn_first = 0  # frame index of self._turn[0]
        self._onset = 0
        self._turns_begun = 0

    @property
    def in_turn(self) -> bool:
        """True between `SpeechStarted` and the turn's end."""
        return self._turn is not None

    @property
    def paused(self) -> bool:
        """True in a turn whose caller has been silent for `pause_ms` (after a `SpeechPaused`)."""
        return self._turn is not None and self._endpointer.paused

    @property
    def turns_begun(self) -> int:
        """How many turns have started: tells one turn from the next."""
        return self._turns_begun

    def end_turn(self) -> TurnEnded | None:
        """End the turn now, during its pause, instead of after `end_silence_ms` of silence.

        For semantic endpointing: when the paused audio already says something whole, waiting out the
        rest of the silence only delays the answer. The turn's audio is exactly what the last
        `SpeechPaused` carried. Returns None unless `paused`. A turn still too short to count is not
        ended (nor dropped): it goes on, and may yet grow ("Bye… bye.") or end as usual.
        """
        if not self.paused:
            return None
        last, onset = self._endpointer.last_speech, self._onset
        if last + 1 - onset < self._min_turn:
            return None
        audio = self._audio_through(last + self._tail)
        self._finish(forget_recent=False)
        at_ms = self._index * FRAME_MS
        return TurnEnded(onset * FRAME_MS, (last + 1) * FRAME_MS, audio, at_ms=at_ms, early=True)

    def finish(self) -> TurnEnded | TurnDiscarded | None:
        """The caller's audio has ended (hang-up): end the turn in progress with what was heard, as if
        silence had followed it. `TurnEnded` carries the speech and whatever tail arrived; speech too
        short to be a turn is `TurnDiscarded`; None when no turn was in progress."""
        if self._turn is None:
            return None
        last, onset = self._endpointer.last_speech, self._onset
        audio = self._audio_through(last + self._tail)
        self._finish(forget_recent=True)
        at_ms = self._index * FRAME_MS
        if last + 1 - onset < self._min_turn:
            return TurnDiscarded(reason="too_short", at_ms=at_ms)
        return TurnEnded(onset * FRAME_MS, (last + 1) * FRAME_MS, audio, at_ms=at_ms)

    @property
    def bot_speaking(self) -> bool:
        """What `set_bot_speaking` last said."""
        return self._barge_in.bot_speaking

    def set_bot_speaking(self, speaking: bool) -> None:
        """The bot started (True) or stopped (False) speaking; barge-in is only possible in between."""
        self._barge_in.set_bot_speaking(speaking)

    def feed_reference(self, bot_frame: bytes) -> None:
        """The bot audio being played now (20 ms at the call rate), once per frame while the bot speaks.

        Lets the echo guard recognise the bot's voice coming back; without it, echo can barge in.
        """
        self._gate.add_reference(bot_frame)

    def feed(self, frame: bytes) -> list[TurnEvent]:
        """Take the next 20 ms caller frame; return the events it caused (usually none)."""
        verdict = self._gate.classify(frame)
        index = self._index
        self._index += 1
        at_ms = self._index * FRAME_MS
        self._recent.append(frame)

        events: list[TurnEvent] = []
        if self._turn is None:
            onset = self._start.update(verdict.speech, index)
            if onset is not None:
                self._begin_turn(onset, index)
                events.append(SpeechStarted(at_ms=at_ms, onset_ms=onset * FRAME_MS))
        else:
            self._turn.append(frame)
            events.extend(self._continue_turn(verdict.speech, index, at_ms))

        barge_onset = self._barge_in.update(verdict.speech, verdict.dbfs, index)
        if barge_onset is not None:
            events.append(BargeIn(at_ms=at_ms, onset_ms=barge_onset * FRAME_MS))
        return events

    def _begin_turn(self, onset: int, index: int) -> None:
        first = max(onset - self._preroll, index - len(self._recent) + 1, 0)
        self._turn = list(self._recent)[first - index - 1 :]
        self._turn_first = first
        self._onset = onset
        self._turns_begun += 1
        self._endpointer.start(index)

    def _continue_turn(self, speech: bool, index: int, at_ms: int) -> list[TurnEvent]:
        signal = self._endpointer.update(speech, index)
        last = self._endpointer.last_speech
        if signal == "pause":
            return [SpeechPaused(at_ms=at_ms, audio=self._audio_through(last + self._tail))]
        if signal == "resume":
            return [SpeechResumed(at_ms=at_ms)]
        onset = self._onset
        if signal == "end":
            audio = self._audio_through(last + self._tail)
            self._finish(forget_recent=False)
            if last + 1 - onset < self._min_turn:
                return [TurnDiscarded(reason="too_short", at_ms=at_ms)]
            return [TurnEnded(onset * FRAME_MS, (last + 1) * FRAME_MS, audio, at_ms=at_ms)]
        if index + 1 - onset >= self._max_turn:
            audio = self._audio_through(min(index, last + self._tail))
            self._finish(forget_recent=True)  # the next turn must not repeat this one as its pre-roll
            return [TurnEnded(onset * FRAME_MS, (last + 1) * FRAME_MS, audio, at_ms=at_ms, forced=True)]
        return []

    def _audio_through(self, last_frame: int) -> bytes:
        assert self._turn is not None
        return b"".join(self._turn[: last_frame + 1 - self._turn_first])

    def _finish(self, *, forget_recent: bool) -> None:
        self._turn = None
        self._start.reset()
        if forget_recent:
            self._recent.clear()
