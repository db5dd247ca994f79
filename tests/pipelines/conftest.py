"""Shared pipeline fixtures: the model pool and the packaged tiny.en model, once per test module; the
packaged piper voice, once per session."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from faster_whisper import WhisperModel

from pipelines.asr import load_whisper
from pipelines.executor import ModelExecutor
from pipelines.models import piper_voice_files, whisper_model_dir
from pipelines.tts import PiperSynthesizer


@pytest.fixture(scope="module")
def executor() -> Iterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=2, name="test-asr")
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> WhisperModel:
    return load_whisper(whisper_model_dir("tiny.en", tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="session")
def synth() -> PiperSynthesizer:
    """The real packaged voice, loaded once for the whole test session."""
    return PiperSynthesizer.load(*piper_voice_files("en_US-joe-medium"))


class CountingSynth:
    """The real synthesizer, counting how often it is asked to speak."""

    def __init__(self, inner: PiperSynthesizer) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    def synthesize(self, text: str) -> bytes:
        with self._lock:
            self.calls.append(text)
        return self.inner.synthesize(text)
