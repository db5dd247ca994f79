"""Lightweight stand-ins for the speech models: the load profile of the benchmarks (`python -m bench load`).

They honour the interfaces calls use (`CallTranscriber`, `Synthesizer`) and run on the same
`ModelExecutor` as the real models, so everything around them is what production runs: answer_url,
stream tokens, the socket, VAD and turn-taking, the hallucination guard's audio check, dialogue,
escalation, records and recordings. Only the model time is replaced by a short sleep on a pool thread
(a slot is held as long as a small model would hold it, without its CPU), so the load profile measures
the orchestration layer, not Whisper and piper.

Passed as `create_app(settings, models=StandInModels(...))`: there is no config key or environment
variable for it, so a deployment cannot switch it on.

- `StandInTranscriber` returns the text of the known caller utterance the turn's speech matches (its
  loudness contour, `voice_print`, compared with a lexicon of the clips the load test speaks), or an
  unfinished phrase otherwise.
- `ToneSynthesizer` returns a soft, syllable-modulated tone as long as the text would take to say.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.config.bot import BotConfig
from agent.worker.speech_models import CallTranscriber
from pipelines.asr import HallucinationGuard, Transcript
from pipelines.executor import ModelExecutor
from pipelines.tts import Synthesizer
from pipelines.voicing import measure_speech, trim_to_speech

UNHEARD = "well I was wondering about"
"""What the stand-in ASR says for speech that matches no lexicon entry: an unfinished phrase, so a
speculation on half an utterance never ends the turn early (semantic endpointing wants a sentence)."""


PRINT_FRAME_S = 0.02


def voice_print(pcm: bytes, rate: int) -> tuple[float, ...]:
    """The loudness contour (dBFS per 20 ms, floored at -60) of the loud part of `pcm`, as the ASR trims
    a turn. Padded with silence first, so a clip and the same clip inside a turn (pre-roll and tail
    around it) print alike."""
    pad = bytes(2 * int(0.3 * rate))
    speech = trim_to_speech(pad + pcm[: len(pcm) - len(pcm) % 2] + pad, rate, margin_ms=0)
    hop = int(rate * PRINT_FRAME_S)
    x = np.frombuffer(speech, dtype="<i2").astype(np.float64) / 32768.0
    n = x.size // hop
    levels = 10.0 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    return tuple(round(float(v), 1) for v in np.maximum(levels, -60.0))


def print_similarity(a: tuple[float, ...], b: tuple[float, ...], max_diff_s: float = 0.1) -> float:
    """Correlation of two voice prints of about the same length (-1 when the lengths differ more than
    `max_diff_s`, or either is too short to compare)."""
    if min(len(a), len(b)) < 5 or abs(len(a) - len(b)) * PRINT_FRAME_S > max_diff_s:
        return -1.0
    grid = np.linspace(0.0, 1.0, len(a))
    resampled = np.interp(grid, np.linspace(0.0, 1.0, len(b)), np.asarray(b))
    return float(np.corrcoef(np.asarray(a), resampled)[0, 1])


@dataclass(frozen=True)
class StandInTranscriber:
    """Speech-to-text by matching voice prints: `lexicon` holds (text, voice print) pairs."""

    executor: ModelExecutor
    sample_rate_in: int
    language: str | None = "en"
    lexicon: tuple[tuple[str, tuple[float, ...]], ...] = ()
    min_similarity: float = 0.9
    cost_s: float = 0.03
    guard: HallucinationGuard = field(default_factory=HallucinationGuard)

    async def transcribe(self, pcm: bytes) -> Transcript:
        """One turn, on the model pool like the real transcriber."""
        started = time.perf_counter()
        transcript = await self.executor.run(self._transcribe_blocking, pcm)
        return dataclasses.replace(transcript, asr_ms=(time.perf_counter() - started) * 1000.0)

    def for_language(self, language: str | None) -> CallTranscriber:
        """Pinned to `language` (None: "detects" the bot's own language with certainty)."""
        return dataclasses.replace(self, language=language)

    def text_for(self, pcm: bytes) -> str:
        """The text of the lexicon entry `pcm` matches best, at `min_similarity` or more; else `UNHEARD`
        (part of an utterance, or one the lexicon does not hold)."""
        heard = voice_print(pcm, self.sample_rate_in)
        scored = [(print_similarity(heard, known), text) for text, known in self.lexicon]
        score, text = max(scored, default=(-1.0, UNHEARD))
        return text if score >= self.min_similarity else UNHEARD

    def _transcribe_blocking(self, pcm: bytes) -> Transcript:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        stats = measure_speech(pcm, self.sample_rate_in)
        language = self.language or "en"
        heard = Transcript(
            "", language, audio_s=stats.duration_s, level_dbfs=stats.level_dbfs, voiced_s=stats.voiced_s
        )
        verdict = self.guard.check_audio(stats)  # silence and noise are rejected as in production
        if verdict is not None:
            return dataclasses.replace(heard, rejected=verdict[0], detail=verdict[1])
        time.sleep(self.cost_s)  # the model's time, without its CPU
        return dataclasses.replace(
            heard,
            text=self.text_for(pcm),
            language_probability=1.0,
            language_scores=((language, 1.0),) if self.language is None else (),
            avg_logprob=-0.2,
            no_speech_prob=0.01,
            compression_ratio=1.2,
            segments=1,
        )


@dataclass(frozen=True)
class ToneSynthesizer:
    """A `Synthesizer` that "says" text as a tone of plausible length (about 15 characters a second)."""

    sample_rate: int = 16000
    seconds_per_char: float = 0.065
    cost_s: float = 0.005
    cost_per_char_s: float = 0.0002
    level_dbfs: float = -20.0

    def synthesize(self, text: str) -> bytes:
        """Blocking: int16 mono PCM at `sample_rate`; empty for text without letters or digits."""
        chars = sum(c.isalnum() for c in text)
        if not chars:
            return b""
        time.sleep(self.cost_s + self.cost_per_char_s * chars)
        n = int(max(0.3, chars * self.seconds_per_char) * self.sample_rate)
        t = np.arange(n) / self.sample_rate
        syllables = 0.55 + 0.45 * np.sin(2 * math.pi * 4.0 * t)  # about four syllables a second
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
        amplitude = 32767 * 10 ** (self.level_dbfs / 20)
        wave = amplitude * syllables * fade * np.sin(2 * math.pi * 220.0 * t)
        pcm: bytes = wave.astype("<i2").tobytes()
        return pcm


@dataclass(frozen=True)
class StandInModels:
    """The `SpeechModels` of the load profile: tone voices and length-matching transcribers.

    `lexicon` maps caller utterances to their voice prints (`voice_print` of the clip at the call rate);
    `asr_cost_s` is the time each transcription holds a pool thread.
    """

    lexicon: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    asr_cost_s: float = 0.03
    tts_cost_s: float = 0.005

    async def voice(self, spec: str, executor: ModelExecutor) -> Synthesizer:
        """A tone voice, whatever voice the bot names."""
        return ToneSynthesizer(cost_s=self.tts_cost_s)

    async def transcriber(
        self, name: str, bot: BotConfig, executor: ModelExecutor, data_dir: Path
    ) -> CallTranscriber:
        """A stand-in transcriber at the bot's call rate, knowing the lexicon."""
        return StandInTranscriber(
            executor,
            bot.stream.voice_quality,
            language=bot.language,
            lexicon=tuple(self.lexicon.items()),
            cost_s=self.asr_cost_s,
        )
