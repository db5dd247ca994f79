"""What the audio itself says about speech, before any model runs: levels and voiced time.

Used by the hallucination guard (silence and noise never reach Whisper) and by speculative ASR (did
the caller say anything after the speculated audio?).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pipelines.audio import SILENCE_DBFS, pcm16_to_float


@dataclass(frozen=True)
class SpeechStats:
    """What the audio itself says about speech, before any model runs."""

    duration_s: float
    level_dbfs: float
    """Level of the active part: the 90th percentile of frame levels."""
    peak_dbfs: float
    """The loudest frame."""
    voiced_s: float
    """Time in frames that look like voiced speech (see `measure_speech`)."""


_FRAME_S, _HOP_S = 0.040, 0.020  # 40 ms holds two periods of a 60 Hz voice
_BAND_HZ = (300.0, 3400.0)  # the telephone band: mains hum lies below, the 8 kHz resampler's edge above
_PITCH_HZ = (60.0, 400.0)
_VOICED_FLOOR_DBFS = -50.0
_VOICED_MIN_BAND_SHARE = 0.1  # most of a hum's energy lies below the band
_VOICED_MIN_PERIODICITY = 0.6  # vowels reach 0.8-1.0; noise and clicks stay below 0.5
_VOICED_MAX_FLATNESS = 0.4  # harmonics are peaky; noise is flat (~0.55) whatever its tilt


def frames_of(pcm: bytes, rate: int) -> npt.NDArray[np.float32]:
    x = pcm16_to_float(pcm[: len(pcm) - len(pcm) % 2])
    n, hop = round(rate * _FRAME_S), round(rate * _HOP_S)
    count = 1 + (x.size - n) // hop if x.size >= n else 0
    frames: npt.NDArray[np.float32] = x[np.arange(n)[None, :] + hop * np.arange(count)[:, None]]
    return frames


def levels_of(frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    if frames.size == 0:
        return np.array([SILENCE_DBFS])
    power = np.mean(frames * frames, axis=1, dtype=np.float64)
    return np.maximum(SILENCE_DBFS, 10.0 * np.log10(power + 1e-20))


def measure_speech(pcm: bytes, rate: int) -> SpeechStats:
    """Levels and voiced time of int16 mono PCM, from 40 ms frames every 20 ms.

    A frame is voiced when its telephone-band energy is audible, periodic at a voice pitch, and has
    a peaky (harmonic) spectrum: silence, white or coloured noise, hum and clicks are not.
    """
    frames = frames_of(pcm, rate)
    duration = len(pcm) // 2 / rate
    if frames.size == 0:
        return SpeechStats(duration, SILENCE_DBFS, SILENCE_DBFS, 0.0)
    levels, n = levels_of(frames), frames.shape[1]
    window = np.hanning(n + 2)[1:-1]
    nfft = 1 << (2 * n - 1).bit_length()  # twice the frame: autocorrelation without wrap-around
    power = np.abs(np.fft.rfft(frames * window, nfft, axis=1)) ** 2 + 1e-20
    freqs = np.fft.rfftfreq(nfft, 1.0 / rate)
    in_band = (freqs >= _BAND_HZ[0]) & (freqs <= _BAND_HZ[1])
    share = power[:, in_band].sum(axis=1) / power.sum(axis=1)
    # Periodicity: in-band autocorrelation at the best pitch lag, over the window's own (Boersma 1993).
    acf = np.fft.irfft(np.where(in_band, power, 0.0), nfft, axis=1)
    window_acf = np.fft.irfft(np.abs(np.fft.rfft(window, nfft)) ** 2, nfft)
    lags = slice(int(rate / _PITCH_HZ[1]), int(rate / _PITCH_HZ[0]) + 1)
    periodicity = ((acf[:, lags] / acf[:, :1]) / (window_acf[lags] / window_acf[0])).max(axis=1)
    # Flatness of the band spectrum with its tilt removed, so brown noise counts as flat as white.
    log_f, log_power = np.log(freqs[in_band]), np.log(power[:, in_band])
    slope, offset = np.polyfit(log_f, log_power.T, 1)
    residual = log_power - (np.outer(slope, log_f) + offset[:, None])
    flatness = np.exp(residual.mean(axis=1)) / np.exp(residual).mean(axis=1)
    voiced = (levels + 10.0 * np.log10(share) > _VOICED_FLOOR_DBFS) & (share > _VOICED_MIN_BAND_SHARE)
    voiced &= (periodicity > _VOICED_MIN_PERIODICITY) & (flatness < _VOICED_MAX_FLATNESS)
    return SpeechStats(
        duration_s=duration,
        level_dbfs=float(np.percentile(levels, 90)),
        peak_dbfs=float(levels.max()),
        voiced_s=float(voiced.sum()) * _HOP_S,
    )


def trim_to_speech(pcm: bytes, rate: int, *, margin_ms: int = 100, above_floor_db: float = 12.0) -> bytes:
    """`pcm` cut to its loud part plus `margin_ms` either side: what Whisper transcribes best.

    A turn reaches ASR with pre-roll and tail (line noise or silence around the words). Whisper hears
    the same words as in a tightly cut recording only if that margin is small: over all 538 Asterisk
    prompts, their turn audio transcribed at 6.34 % WER, the whole (tight) files at 5.68 %, and the
    turn audio cut like this at 5.61 %. Loud means 12 dB over the audio's own noise floor (its 10th
    percentile 10 ms level) and over -60 dBFS; the margin keeps soft onsets and endings.
    """
    hop = rate // 100
    x = pcm16_to_float(pcm[: len(pcm) - len(pcm) % 2])
    n = x.size // hop
    if n < 5:
        return pcm
    levels = 10.0 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1, dtype=np.float64) + 1e-12)
    threshold = max(-60.0, float(np.percentile(levels, 10)) + above_floor_db)
    loud = np.nonzero(levels > threshold)[0]
    if loud.size == 0:
        return pcm
    margin = margin_ms // 10
    first, last = max(0, int(loud[0]) - margin), min(n, int(loud[-1]) + 1 + margin)
    end = len(pcm) - len(pcm) % 2 if last == n else last * hop * 2
    return pcm[first * hop * 2 : end]
