"""Caller speech for call tests: the piper voice shifted up in pitch and speed, so it is not the bot's."""

from __future__ import annotations

from functools import cache

from pipelines.audio import resample
from pipelines.models import piper_voice_files
from pipelines.tts import PiperSynthesizer

SHIFT = 1.12  # play 22.05 kHz speech as if it were 24.7 kHz: 12 % higher and faster


@cache
def caller_says(text: str, rate: int = 8000) -> bytes:
    """`text` spoken by a caller voice distinct from the bot's, at `rate`."""
    synth = PiperSynthesizer.load(*piper_voice_files("en_US-joe-medium"))
    pcm = synth.synthesize(text)
    shifted_rate = 24000  # resample() takes standard rates; 22050 → 24000 is the shift
    assert abs(shifted_rate / synth.sample_rate - SHIFT) < 0.05
    return resample(pcm, shifted_rate, rate)
