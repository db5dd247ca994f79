"""Caller speech for call tests and scenarios, made reproducibly from text, plus real human speech.

- `caller_says`: the piper voice shifted up in pitch and speed, so it is not the bot's. Piper samples
  its prosody noise at random; without that noise the same text gives the same audio on every run,
  so what the ASR hears (and the tests) are repeatable.
- `espeak_says`: espeak-ng (Debian `espeak-ng`), a second, clearly synthetic voice in many languages.
- `asterisk_prompt`: a real human recording from Debian's Asterisk sound packages (8 kHz), e.g.
  `en/vm-goodbye` or `es/vm-goodbye`; the packages are installed by `make debs`, never committed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from piper import PiperVoice, SynthesisConfig

from pipelines.audio import read_wav, resample
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


ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds")


class MissingSpeech(LookupError):
    """Speech a scenario names is not on this machine (a Debian package is missing)."""


@cache
def espeak_says(text: str, language: str = "en", rate: int = 8000) -> bytes:
    """`text` spoken by espeak-ng in `language` (an espeak-ng voice name: en, es, fr, hi…), at `rate`."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise MissingSpeech("espeak-ng is not installed (Debian package espeak-ng; `make debs`)")
    with tempfile.TemporaryDirectory(prefix="hotline-espeak-") as tmp:
        out = Path(tmp) / "say.wav"
        done = subprocess.run(
            [binary, "-v", language, "-s", "150", "-w", str(out), text],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if done.returncode != 0 or not out.exists():
            raise MissingSpeech(f"espeak-ng -v {language} failed: {done.stderr.strip() or done.returncode}")
        pcm, source_rate = read_wav(out)
    return resample(pcm, source_rate, rate)


def asterisk_prompt(name: str, rate: int = 8000) -> bytes:
    """A real human prompt from the Asterisk sound packages: "en/vm-goodbye" ("vm-goodbye" is English)."""
    language, _, prompt = name.rpartition("/")
    language = language or "en"
    # The -wav packages install e.g. es_MX_f_Allison/; only some also link the plain language name.
    dirs = [ASTERISK_SOUNDS / language, *sorted(ASTERISK_SOUNDS.glob(f"{language}_*"))]
    path = next((d / f"{prompt}.wav" for d in dirs if (d / f"{prompt}.wav").is_file()), None)
    if path is None:
        package = f"asterisk-core-sounds-{language.split('_')[0]}-wav"
        raise MissingSpeech(
            f"no Asterisk prompt {name!r} in {ASTERISK_SOUNDS}; install {package} (`make debs`)"
        )
    pcm, source_rate = read_wav(path)
    return resample(pcm, source_rate, rate)
