"""Shared pipeline fixtures: the model pool and the packaged tiny.en model, once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from faster_whisper import WhisperModel

from pipelines.asr import load_whisper
from pipelines.executor import ModelExecutor
from pipelines.models import whisper_model_dir


@pytest.fixture(scope="module")
def executor() -> Iterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=2, name="test-asr")
    yield pool
    pool.shutdown()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> WhisperModel:
    return load_whisper(whisper_model_dir("tiny.en", tmp_path_factory.mktemp("models")))
