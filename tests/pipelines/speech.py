"""Test audio: real recorded speech from Debian packages, and synthetic line conditions around it.

- Asterisk's English IVR prompts (8 kHz, one human voice, tightly trimmed) in `ASTERISK`;
  `prompt_text(name)` gives their transcripts.
- LibriVox sentences read by a human (16 kHz) in `LIBRIVOX`.
- The bot's own voice: `bot_speech(rate)`, from the packaged Piper voice (synthesized once per process).
All PCM is int16 mono bytes, as in `pipelines.audio`.
"""

from __future__ import annotations

import gzip
import math
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pipelines.audio import read_wav, resample
from pipelines.turns import TurnDetector, TurnEvent
from pipelines.vad import FRAME_MS

ASTERISK = Path("/usr/share/asterisk/sounds/en")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _samples(pcm: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def _pcm(samples: npt.NDArray[np.float64]) -> bytes:
    return np.clip(np.round(samples), -32768, 32767).astype("<i2").tobytes()


@cache
def prompt(name: str, rate: int = 8000) -> bytes:
    """An Asterisk prompt (e.g. "agent-pass") as PCM at `rate`."""
    pcm, native = read_wav(ASTERISK / f"{name}.wav")
    return resample(pcm, native, rate)


@cache
def librivox(stem: str, rate: int = 16000) -> bytes:
    """A LibriVox sentence ("sense_and_sensibility_01_austen_64kb-0880") as PCM at `rate`."""
    pcm, native = read_wav(LIBRIVOX / f"{stem}.wav")
    return resample(pcm, native, rate)


@cache
def prompt_text(name: str) -> str:
    """The transcript of an Asterisk prompt."""
    for line in gzip.open(ASTERISK_TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        key, _, text = line.partition(":")
        if key.strip() == name:
            return text.strip()
    raise KeyError(name)


BOT_TEXT = "Thanks for calling. I can check an order, change a delivery address, or help with a refund."


@cache
def _bot_speech_native() -> tuple[bytes, int]:
    # Imported here: loading the voice takes seconds. Piper samples its prosody noise at random;
    # without that noise the voice is the same on every run, and so are the tests.
    from piper import PiperVoice, SynthesisConfig

    from pipelines.models import piper_voice_files

    voice = PiperVoice.load(*piper_voice_files("en_US-joe-medium"))
    steady = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(BOT_TEXT, steady))
    return pcm, voice.config.sample_rate


@cache
def bot_speech(rate: int) -> bytes:
    """The bot saying `BOT_TEXT` (about 5 s, Piper's full-scale level) at `rate`."""
    pcm, native = _bot_speech_native()
    return resample(pcm, native, rate)


def excerpt(pcm: bytes, rate: int, start_ms: int, length_ms: int) -> bytes:
    """`length_ms` of `pcm` from `start_ms`, with 5 ms fades so the cut makes no click."""
    samples = _samples(pcm)[rate * start_ms // 1000 :][: rate * length_ms // 1000].copy()
    fade = min(rate // 200, samples.size // 2)
    ramp = np.linspace(0.0, 1.0, fade)
    samples[:fade] *= ramp
    samples[samples.size - fade :] *= ramp[::-1]
    return _pcm(samples)


def trimmed(pcm: bytes, rate: int) -> bytes:
    """`pcm` from its true onset to its true offset (see `true_onset_ms`)."""
    onset, offset = true_onset_ms(pcm, rate), true_offset_ms(pcm, rate)
    return pcm[2 * (rate * onset // 1000) : 2 * (rate * offset // 1000)]


def silence(ms: int, rate: int) -> bytes:
    """Digital silence."""
    return bytes(2 * rate * ms // 1000)


def gain(pcm: bytes, db: float) -> bytes:
    """`pcm` made `db` louder (negative: quieter)."""
    return _pcm(_samples(pcm) * 10 ** (db / 20))


def delay(pcm: bytes, ms: int, rate: int) -> bytes:
    """`pcm` starting `ms` later (silence first); the result is longer by that much."""
    return silence(ms, rate) + pcm


def mix(*tracks: bytes) -> bytes:
    """Sum of the tracks, as long as the longest (shorter ones end in silence), clipped to int16."""
    length = max(len(t) for t in tracks) // 2
    total = np.zeros(length)
    for track in tracks:
        samples = _samples(track)
        total[: samples.size] += samples
    return _pcm(total)


def telephone_echo(pcm: bytes, rate: int) -> bytes:
    """`pcm` as a line hybrid returns it: smeared by a 4 ms decaying impulse response (same energy),
    then through G.711 µ-law coding (8-bit logarithmic quantization)."""
    taps = np.arange(int(0.004 * rate))
    response = np.exp(-taps / (taps.size / 3)) * np.cos(taps * 1.3)
    response /= math.sqrt(float(np.sum(response**2)))
    x = np.convolve(_samples(pcm), response)[: len(pcm) // 2] / 32768.0
    mu = 255.0
    coded = np.round(np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu) * 127) / 127
    return _pcm(np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu * 32768.0)


def line_noise(seconds: float, rate: int, *, seed: int = 0, clicks: int = 5) -> bytes:
    """A quiet bad line: white noise at -45 dBFS, 50 Hz mains hum (and its 150 Hz harmonic), and
    `clicks` short full-scale clicks (2 ms decaying pulses) at random moments."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    full = 32768.0
    noise = rng.normal(0.0, full * 10 ** (-45 / 20), n)
    hum = full * 10 ** (-40 / 20) * (np.sin(2 * np.pi * 50 * t) + 0.3 * np.sin(2 * np.pi * 150 * t))
    out = noise + hum
    pulse = int(0.002 * rate)
    for start in rng.integers(0, n - pulse, clicks):
        out[start : start + pulse] += full * 0.8 * np.exp(-np.arange(pulse) / (pulse / 4))
    return _pcm(out)


def burst(ms: int, rate: int, *, dbfs: float = -15.0, seed: int = 1) -> bytes:
    """A cough-like noise burst: band-limited noise with a fast attack and a decay."""
    rng = np.random.default_rng(seed)
    n = rate * ms // 1000
    noise = np.convolve(rng.normal(0.0, 1.0, n), np.ones(4) / 4, mode="same")
    envelope = np.minimum(1.0, np.arange(n) / (0.01 * rate)) * np.exp(-np.arange(n) / (0.5 * n))
    shaped = noise * envelope
    rms = math.sqrt(float(np.mean(shaped**2)))
    return _pcm(shaped * (32768.0 * 10 ** (dbfs / 20)) / rms)


def true_onset_ms(pcm: bytes, rate: int, threshold_dbfs: float = -40.0) -> int:
    """The first 5 ms window louder than `threshold_dbfs`: where speech really begins."""
    win = rate // 200
    samples = _samples(pcm)
    count = samples.size // win
    power = np.mean(samples[: count * win].reshape(count, win) ** 2, axis=1)
    loud = np.flatnonzero(power > (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2)
    if loud.size == 0:
        raise ValueError("no speech above the threshold")
    return int(loud[0]) * 5


def true_offset_ms(pcm: bytes, rate: int, threshold_dbfs: float = -40.0) -> int:
    """The end of the last 5 ms window louder than `threshold_dbfs`."""
    reversed_pcm = _pcm(_samples(pcm)[::-1])
    return len(pcm) // 2 * 1000 // rate - true_onset_ms(reversed_pcm, rate, threshold_dbfs)


def frames(pcm: bytes, rate: int) -> list[bytes]:
    """`pcm` cut into 20 ms frames, the last one padded with silence."""
    size = rate * FRAME_MS // 1000 * 2
    padded = pcm + bytes(-len(pcm) % size)
    return [padded[i : i + size] for i in range(0, len(padded), size)]


def run(
    detector: TurnDetector, caller: bytes, *, reference: bytes = b"", bot_from_ms: int = 0
) -> list[TurnEvent]:
    """Feed `caller` through `detector` and return every event.

    With a `reference` (bot audio), the bot speaks from `bot_from_ms` until the reference ends: the
    reference is fed alongside the caller frames and `set_bot_speaking` is called at both ends.
    """
    rate = detector.sample_rate
    bot = frames(reference, rate) if reference else []
    bot_first = bot_from_ms // FRAME_MS
    events: list[TurnEvent] = []
    for index, frame in enumerate(frames(caller, rate)):
        k = index - bot_first
        if bot and k == 0:
            detector.set_bot_speaking(True)
        if 0 <= k < len(bot):
            detector.feed_reference(bot[k])
        elif bot and k == len(bot):
            detector.set_bot_speaking(False)
        events.extend(detector.feed(frame))
    return events
