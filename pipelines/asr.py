"""Speech to text with faster-whisper: one model per process, a hallucination guard, speculative finals.

Whisper writes *something* for any input: "Thank you." for a breath, "you" for line noise. On a phone
line that is worse than hearing nothing, so every transcript passes `HallucinationGuard`: audio that is
silent or holds no voiced speech never reaches the model, and the model's own confidence decides the
rest. Inference runs on the shared `ModelExecutor`, never on the event loop.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from faster_whisper import WhisperModel

from pipelines.audio import SILENCE_DBFS, pcm16_to_float, resample
from pipelines.executor import JobPriority, ModelExecutor, Urgency
from pipelines.text import PHANTOM_PHRASES, normalize_transcript, strip_annotations
from pipelines.voicing import SpeechStats, frames_of, levels_of, measure_speech, trim_to_speech
from pipelines.whisper_window import WindowDecode, WindowDecoder

log = logging.getLogger(__name__)

ASR_RATE = 16000
"""Whisper's input rate; call audio is resampled to it."""

# Fastest sane decoding for short phone turns (see `Transcriber`):
_DECODE_OPTIONS: dict[str, Any] = {
    "temperature": 0.0,  # no temperature fallback: re-decoding hard audio 5 more times costs seconds
    "compression_ratio_threshold": None,  # these three only steer the fallback and silent-segment
    "log_prob_threshold": None,  # skipping inside faster-whisper; HallucinationGuard judges instead,
    "no_speech_threshold": None,  # and records why
    "condition_on_previous_text": False,  # one turn at a time; stops a hallucination from propagating
    "without_timestamps": True,  # no timestamp tokens to decode; one segment per 30 s window
    "vad_filter": False,  # our VAD already cut the turn
}
_TOKENS_PER_SECOND = 8  # fast speech is ~6 tokens/s; the bound stops a repetition loop early
_MIN_NEW_TOKENS = 16

_models: dict[tuple[Path, str, int, int], WhisperModel] = {}
_models_lock = threading.Lock()


def load_whisper(
    model_dir: Path, *, compute_type: str = "int8", cpu_threads: int | None = None, num_workers: int = 2
) -> WhisperModel:
    """Load a faster-whisper model once per process (blocking, ~0.5 s) and return the shared instance.

    Threads: the model pool runs two jobs at once (ASR beside ASR or TTS), so by default each ASR job
    gets half the cores, 1 on a 2-core box, and two jobs never fight over a core. Measured here: a
    second thread saves ~0.1 s on a lone tiny.en decode, but two decodes side by side took twice as
    long with 2 threads each as with 1, and Piper beside a decode slowed more. `num_workers=2` lets two
    calls decode at once instead of queueing inside CTranslate2 while holding a pool slot; the workers
    share the weights (no extra memory). The same arguments give the same object.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
    threads = max(1, min(4, cores // 2)) if cpu_threads is None else cpu_threads
    key = (Path(model_dir).resolve(), compute_type, threads, num_workers)
    # One lock for all models: loading is rare, and a second caller must wait rather than load twice.
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = WhisperModel(
                str(key[0]), device="cpu", compute_type=compute_type, cpu_threads=threads,
                num_workers=num_workers, local_files_only=True,
            )  # fmt: skip
        return model


class Rejection(StrEnum):
    """Why `HallucinationGuard` dropped a transcript."""

    SILENT = "silent"  # the line was (near) silent
    NO_VOICE = "no_voice"  # sound, but hardly any voiced speech: noise, hum, clicks
    NO_SPEECH = "no_speech"  # Whisper itself thinks there was no speech and is unsure of its words
    REPETITIVE = "repetitive"  # text compresses too well: a hallucination loop
    PHANTOM = "phantom"  # a known Whisper phantom ("Thank you.", "[MUSIC]") on weak evidence
    NO_WORDS = "no_words"  # the model returned nothing


Verdict = tuple[Rejection, str] | None
"""A rejection and its detail, or None when the transcript passes."""


@dataclass(frozen=True)
class HallucinationGuard:
    """Thresholds deciding when a transcript is an artefact of silence, noise or the model."""

    min_level_dbfs: float = -50.0
    min_voiced_s: float = 0.06
    max_no_speech_prob: float = 0.6  # a segment is dropped when both this is exceeded
    min_avg_logprob: float = -1.0  # and its average log probability is below this (Whisper's rule)
    max_compression_ratio: float = 2.4
    phantom_phrases: frozenset[str] = PHANTOM_PHRASES
    # A phantom phrase is dropped unless the audio backs it: enough voice, loud enough, and confident.
    phantom_min_voiced_s: float = 0.25
    phantom_min_level_dbfs: float = -40.0
    phantom_max_no_speech_prob: float = 0.3
    phantom_min_avg_logprob: float = -0.8

    def check_audio(self, stats: SpeechStats) -> Verdict:
        """Before the model: reject silence and sound without voiced speech (saves a model run)."""
        if stats.level_dbfs < self.min_level_dbfs:
            return Rejection.SILENT, f"level {stats.level_dbfs:.1f} dBFS < {self.min_level_dbfs:.1f}"
        if stats.voiced_s < self.min_voiced_s:
            return Rejection.NO_VOICE, f"{stats.voiced_s:.2f} s voiced < {self.min_voiced_s:.2f} s"
        return None

    def check_segment(self, no_speech_prob: float, avg_logprob: float, compression_ratio: float) -> Verdict:
        """One decoded window: Whisper's own no-speech and repetition signals."""
        if no_speech_prob > self.max_no_speech_prob and avg_logprob < self.min_avg_logprob:
            return Rejection.NO_SPEECH, f"no_speech_prob {no_speech_prob:.2f}, avg_logprob {avg_logprob:.2f}"
        if compression_ratio > self.max_compression_ratio:
            ratio = f"{compression_ratio:.2f} > {self.max_compression_ratio:.2f}"
            return Rejection.REPETITIVE, f"compression ratio {ratio}"
        return None

    def check_text(self, text: str, stats: SpeechStats, no_speech_prob: float, avg_logprob: float) -> Verdict:
        """The whole transcript: nothing, only annotations, or a phantom phrase the audio does not back."""
        if not text.strip():
            return Rejection.NO_WORDS, "empty transcript"
        words = normalize_transcript(strip_annotations(text))
        if not words:
            return Rejection.PHANTOM, f"no words, only {text.strip()!r}"
        if words not in self.phantom_phrases:
            return None
        doubts = {
            f"{stats.voiced_s:.2f} s voiced": stats.voiced_s < self.phantom_min_voiced_s,
            f"level {stats.level_dbfs:.1f} dBFS": stats.level_dbfs < self.phantom_min_level_dbfs,
            f"no_speech_prob {no_speech_prob:.2f}": no_speech_prob > self.phantom_max_no_speech_prob,
            f"avg_logprob {avg_logprob:.2f}": avg_logprob < self.phantom_min_avg_logprob,
        }
        reasons = ", ".join(doubt for doubt, doubtful in doubts.items() if doubtful)
        return (Rejection.PHANTOM, f"{words!r} on weak evidence: {reasons}") if reasons else None


@dataclass(frozen=True)
class Transcript:
    """One transcription and the evidence behind it.

    When the guard rejects, `text` is "" and `rejected`/`detail` say why. When the model never ran
    (`segments == 0`: silence, no voice), the model fields keep their defaults.
    """

    text: str
    language: str
    language_probability: float = 0.0
    language_scores: tuple[tuple[str, float], ...] = ()
    """When the language was detected: the likeliest languages and their probabilities, best first."""
    avg_logprob: float = 0.0
    no_speech_prob: float = 1.0
    compression_ratio: float = 0.0
    audio_s: float = 0.0
    asr_ms: float = 0.0
    """Wall time of `Transcriber.transcribe`, waiting for a pool slot included."""
    rejected: Rejection | None = None
    segments: int = 0
    detail: str = ""
    level_dbfs: float = SILENCE_DBFS
    voiced_s: float = 0.0

    @property
    def accepted(self) -> bool:
        """True when the transcript holds words the guard let through."""
        return self.rejected is None


class Transcriber:
    """Turns one caller turn (int16 PCM at `sample_rate_in`) into a guarded `Transcript`.

    Decoding is greedy (`beam_size=1`: less decoder time than beam 5, the same words on short clear
    turns), at temperature 0 with no fallback, without timestamps, not conditioned on earlier text,
    with new tokens bounded by the audio length; see `_DECODE_OPTIONS`. `language=None` detects the
    language of each turn (multilingual models; English-only models always say "en"): on the short
    window the detection reads the encoder output the decode uses anyway (a few ms more than a
    pinned language); `candidates` limits it to those languages. `for_language` gives a transcriber
    pinned to one language that shares this one's model and window decoder.

    `trim_margin_ms` cuts the turn to its loud part plus this margin before decoding (None: as is).
    `window_s` below 30 decodes turns that fit on a shorter encoder window (`WindowDecoder`: the same
    words in less than half the time); longer turns, and language detection, use faster-whisper's own
    30 s windows.
    """

    def __init__(
        self,
        model: WhisperModel,
        executor: ModelExecutor,
        *,
        sample_rate_in: int,
        language: str | None = "en",
        beam_size: int = 1,
        guard: HallucinationGuard | None = None,
        window_s: float = 20.0,
        trim_margin_ms: int | None = 100,
        candidates: tuple[str, ...] = (),
    ) -> None:
        if language not in (None, "en") and not model.model.is_multilingual:
            raise ValueError(f"language {language!r} needs a multilingual Whisper model, not English-only")
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        self._model = model
        self._executor = executor
        self.sample_rate_in = sample_rate_in
        self.language = language
        self.beam_size = beam_size
        self.guard = guard or HallucinationGuard()
        self.trim_margin_ms = trim_margin_ms
        self.candidates = candidates
        self._window = (
            WindowDecoder(model, language=language or "en", window_s=window_s, beam_size=beam_size)
            if window_s < 30.0
            else None
        )

    def for_language(self, language: str | None) -> Transcriber:
        """This transcriber pinned to `language` (None: detecting), sharing its model and window."""
        if language not in (None, "en") and not self._model.model.is_multilingual:
            raise ValueError(f"language {language!r} needs a multilingual Whisper model, not English-only")
        pinned = copy.copy(self)
        pinned.language = language
        return pinned

    async def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one turn on the model pool; cancelling drops the job if it has not started yet."""
        started = time.perf_counter()
        transcript = await self._executor.run(self._transcribe_blocking, pcm)
        return replace(transcript, asr_ms=(time.perf_counter() - started) * 1000.0)

    def _decode(
        self, audio: npt.NDArray[np.float32], duration_s: float
    ) -> tuple[list[WindowDecode], list[tuple[str, float]]]:
        """Decoded windows (one per 30 s of a long turn) and the language probabilities, best first
        (one language with probability 1 when it was given, not detected)."""
        max_new_tokens = math.ceil(min(duration_s, 30.0) * _TOKENS_PER_SECOND) + _MIN_NEW_TOKENS
        if self._window is not None and self._window.fits(audio.size):
            if self.language is not None:
                one = self._window.decode(audio, max_new_tokens=max_new_tokens, language=self.language)
                return [one], [(self.language, 1.0)]
            window = self._window.decode_detecting(
                audio, max_new_tokens=max_new_tokens, candidates=self.candidates
            )
            return [window[0]], window[1]
        generator, info = self._model.transcribe(
            audio, language=self.language, beam_size=self.beam_size, max_new_tokens=max_new_tokens,
            **_DECODE_OPTIONS,
        )  # fmt: skip
        # Decoding happens lazily, while iterating: here, on the pool thread.
        decoded = [
            WindowDecode(s.text, len(s.tokens), s.avg_logprob, s.no_speech_prob, s.compression_ratio)
            for s in generator
        ]
        if self.language is not None:
            return decoded, [(self.language, 1.0)]
        scores = [(lang, float(p)) for lang, p in (info.all_language_probs or [])]
        return decoded, scores or [(info.language, info.language_probability)]

    def _transcribe_blocking(self, pcm: bytes) -> Transcript:
        pcm = pcm[: len(pcm) - len(pcm) % 2]
        stats = measure_speech(pcm, self.sample_rate_in)
        heard = Transcript("", self.language or "", audio_s=stats.duration_s, level_dbfs=stats.level_dbfs)
        heard = replace(heard, voiced_s=stats.voiced_s)
        verdict = self.guard.check_audio(stats)
        if verdict is not None:
            return replace(heard, rejected=verdict[0], detail=verdict[1])
        if self.trim_margin_ms is not None:  # pre-roll and tail down to a small margin (see trim_to_speech)
            pcm = trim_to_speech(pcm, self.sample_rate_in, margin_ms=self.trim_margin_ms)
        audio = pcm16_to_float(resample(pcm, self.sample_rate_in, ASR_RATE))
        segments, scores = self._decode(audio, stats.duration_s)
        language, language_probability = scores[0]
        check = self.guard.check_segment
        drops = [check(s.no_speech_prob, s.avg_logprob, s.compression_ratio) for s in segments]
        kept = [s for s, drop in zip(segments, drops, strict=True) if drop is None]
        text = " ".join(strip_annotations(s.text) for s in kept).strip()
        weights = [max(s.tokens, 1) for s in kept]
        avg_logprob = sum(s.avg_logprob * w for s, w in zip(kept, weights, strict=True)) / (sum(weights) or 1)
        no_speech_prob = min((s.no_speech_prob for s in segments), default=1.0)
        verdict = next((d for d in drops if d), None) if segments and not kept else None
        verdict = verdict or self.guard.check_text(text, stats, no_speech_prob, avg_logprob)
        return replace(
            heard,
            text="" if verdict else text,
            language=language,
            language_probability=language_probability,
            language_scores=tuple(scores[:5]) if self.language is None else (),
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech_prob,
            compression_ratio=max((s.compression_ratio for s in segments), default=0.0),
            rejected=verdict[0] if verdict else None,
            segments=len(segments),
            detail=verdict[1] if verdict else "",
        )


class SpeechToText(Protocol):
    """What `SpeculativeTranscriber` needs: `Transcriber`, a wrapper around it, or a fake."""

    @property
    def sample_rate_in(self) -> int:
        """Rate of the PCM passed to `transcribe`."""

    async def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one turn."""


class SpeculativeTranscriber:
    """Transcribes a turn while the caller pauses, so the text is usually ready when the turn ends.

    One per caller turn. `speculate` at each short pause, `final` at the endpoint, `cancel` on
    barge-in or hang-up. A speculation is reused when the final audio only adds a pause to it (or
    drops one): same bytes up to the shorter length, and the difference has no voiced frame and
    nothing louder than `pause_dbfs` or `pause_margin_db` below the speech.
    """

    def __init__(
        self, transcriber: SpeechToText, *, pause_dbfs: float = -50.0, pause_margin_db: float = 15.0
    ) -> None:
        self._transcriber = transcriber
        self.pause_dbfs = pause_dbfs
        self.pause_margin_db = pause_margin_db
        self._task: asyncio.Task[Transcript] | None = None
        self._urgency = Urgency(JobPriority.SPECULATIVE)
        self._audio = b""

    @property
    def speculation(self) -> asyncio.Task[Transcript] | None:
        """The speculation in flight or done, if any."""
        return self._task

    def speculate(self, audio: bytes) -> asyncio.Task[Transcript] | None:
        """Start transcribing the turn so far, replacing an older speculation unless it covers this audio.

        Returns the speculation that covers `audio` when a new one was started, None when the running
        one already covers it (it was started for this same speech).
        """
        if self._task is not None and _usable(self._task) and self._covers(self._audio, audio):
            return None  # the caller is still pausing: the running speculation already has all the speech
        self.cancel()
        self._audio = bytes(audio)
        # On the model pool, every turn's final transcript goes before speculation (until this one is it).
        self._urgency = Urgency(JobPriority.SPECULATIVE)
        self._task = asyncio.create_task(
            self._transcriber.transcribe(self._audio), name="asr speculation", context=self._urgency.context()
        )
        self._task.add_done_callback(_retrieve_exception)
        return self._task

    async def final(self, audio: bytes) -> tuple[Transcript, bool]:
        """The turn's transcript and whether the speculation provided it (a hit)."""
        task, spoken = self._task, self._audio
        self._task, self._audio = None, b""
        if task is not None and _usable(task) and self._covers(spoken, audio):
            self._urgency.promote()  # the speculation is the final transcript now: no longer behind others
            try:
                return await task, True
            except Exception as exc:  # a failed speculation falls back to a fresh run
                log.warning("speculative transcription failed (%r); transcribing the final audio", exc)
        elif task is not None:
            task.cancel()
        return await self._transcriber.transcribe(audio), False

    def cancel(self) -> None:
        """Drop the speculation (barge-in, hang-up); a model run already started finishes unseen."""
        if self._task is not None:
            self._task.cancel()
        self._task, self._audio = None, b""

    def _covers(self, spoken: bytes, audio: bytes) -> bool:
        shorter, longer = sorted((spoken, audio), key=len)
        if not longer.startswith(shorter):
            return False
        rate, pause = self._transcriber.sample_rate_in, longer[len(shorter) :]
        speech = float(np.percentile(levels_of(frames_of(shorter, rate)), 90))
        if levels_of(frames_of(pause, rate)).max() > max(self.pause_dbfs, speech - self.pause_margin_db):
            return False  # something was said, or the line got loud, after the speculated audio
        return measure_speech(pause, rate).voiced_s == 0.0


def _usable(task: asyncio.Task[Transcript]) -> bool:
    return not task.cancelled() and (not task.done() or task.exception() is None)


def _retrieve_exception(task: asyncio.Task[Transcript]) -> None:
    # A superseded speculation may fail with nobody awaiting it; retrieving keeps asyncio from warning.
    if not task.cancelled():
        task.exception()
