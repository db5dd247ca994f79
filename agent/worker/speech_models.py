"""Where a worker's speech models come from: the seam `Runtime.start` loads voices and transcribers through.

`LocalSpeechModels` (the default, and the only one `hotline serve` ever uses) loads piper voices and
faster-whisper models from the installed model packages (`pipelines/models.py`). The load profile of
the benchmarks passes lightweight stand-ins instead (`testkit/standins.py`); that is a Python
argument to `create_app`/`Runtime.start`, not a config key or an environment variable, so no deployment
can switch it on by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from agent.config.bot import BotConfig
from pipelines.asr import Transcriber, Transcript, load_whisper
from pipelines.executor import ModelExecutor
from pipelines.models import piper_voice_files, whisper_model_dir
from pipelines.tts import PiperSynthesizer, Synthesizer


class CallTranscriber(Protocol):
    """What a call needs from its bot's speech-to-text: `Transcriber`, or a stand-in."""

    @property
    def sample_rate_in(self) -> int:
        """Rate of the PCM passed to `transcribe` (the call rate)."""
        ...

    async def transcribe(self, pcm: bytes) -> Transcript:
        """Transcribe one turn."""
        ...

    def for_language(self, language: str | None) -> CallTranscriber:
        """The same transcriber pinned to `language` (None: detecting it)."""
        ...


class SpeechModels(Protocol):
    """Loads what each bot speaks and hears with; called once per bot (and voice) at start-up."""

    async def voice(self, spec: str, executor: ModelExecutor) -> Synthesizer:
        """The synthesizer for a voice named in a bot's YAML (`voice`, `languages.voices`)."""
        ...

    async def transcriber(
        self, name: str, bot: BotConfig, executor: ModelExecutor, data_dir: Path
    ) -> CallTranscriber:
        """The bot's transcriber at its call rate."""
        ...


class LocalSpeechModels:
    """Piper and faster-whisper from the installed model packages; each model loads once per process."""

    async def voice(self, spec: str, executor: ModelExecutor) -> Synthesizer:
        """Load a piper voice (cached by path)."""
        return await executor.run(PiperSynthesizer.load, *piper_voice_files(spec))

    async def transcriber(
        self, name: str, bot: BotConfig, executor: ModelExecutor, data_dir: Path
    ) -> CallTranscriber:
        """Load the bot's Whisper model (cached by path) behind a `Transcriber` at the call rate."""
        model = await executor.run(load_whisper, whisper_model_dir(bot.asr_model, data_dir / "models"))
        if bot.languages.detect and not model.model.is_multilingual:
            raise ValueError(f"bot {name}: languages.detect needs a multilingual asr_model (base)")
        return Transcriber(
            model, executor, sample_rate_in=bot.stream.voice_quality,
            language=bot.language if model.model.is_multilingual else "en",
            window_s=bot.asr_window_s, candidates=tuple(bot.languages.candidates),
        )  # fmt: skip
