"""Caller speech for call tests: the piper voice shifted up in pitch and speed, so it is not the bot's.

Piper samples its prosody noise at random; without that noise the same text gives the same audio on
every run, so what the ASR hears (and the tests) are repeatable.
"""

from __future__ import annotations

from functools import cache

from piper import PiperVoice, SynthesisConfig

from pipelines.audio import resample
from pipelines.models import piper_voice_files

SHIFTED_RATE = 24000  # play 22.05 kHz speech as if it were 24 kHz: about 9 % higher and faster
STEADY = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)


@cache
def _voice() -> PiperVoice:
    return PiperVoice.load(*piper_voice_files("en_US-joe-medium"))


@cache
def caller_says(text: str, rate: int = 8000) -> bytes:
    """`text` spoken by a caller voice distinct from the bot's, at `rate`."""
    voice = _voice()
    assert voice.config.sample_rate == 22050
    pcm = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, STEADY))
    return resample(pcm, SHIFTED_RATE, rate)
