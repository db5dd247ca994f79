"""Language detection and transcription with the multilingual Whisper base, on real non-English speech.

The speech is Asterisk's own prompts from Debian (asterisk-core-sounds-{es,fr,it,ru}-wav, 8 kHz, read
by professional voices), installed by `make debs`. The model loads once for the module.
"""

from __future__ import annotations

import time

import pytest
from faster_whisper import WhisperModel

from pipelines.asr import Transcriber, load_whisper
from pipelines.executor import ModelExecutor
from pipelines.models import whisper_model_dir
from pipelines.text import normalize_transcript
from testkit.caller_voice import asterisk_prompt

RATE = 8000
CANDIDATES = ("en", "hi", "es", "fr", "it", "de", "ru", "ar")  # as prompts/international_desk.yaml


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> WhisperModel:
    return load_whisper(whisper_model_dir("base", tmp_path_factory.mktemp("model-cache")))


@pytest.fixture(scope="module")
def detecting(base: WhisperModel, executor: ModelExecutor) -> Transcriber:
    return Transcriber(base, executor, sample_rate_in=RATE, language=None, candidates=CANDIDATES)


@pytest.mark.parametrize(
    ("prompt", "language", "words"),
    [
        ("es/conf-onlyperson", "es", "unica persona en la conferencia"),
        ("es/conf-waitforleader", "es", "la conferencia comenzara"),
        ("fr_CA/conf-onlyperson", "fr", "seul participant"),
        ("it_IT/conf-onlyperson", "it", "persona in questa conferenza"),
        ("ru_RU/conf-onlyperson", "ru", "конференции"),
    ],
)
async def test_a_prompts_language_is_detected_and_transcribed_in_it(
    detecting: Transcriber, prompt: str, language: str, words: str
) -> None:
    t = await detecting.transcribe(asterisk_prompt(prompt))
    print(f"{prompt}: {t.language} p={t.language_probability:.2f} {t.asr_ms:.0f} ms {t.text!r}")
    assert t.accepted and t.language == language
    assert t.language_scores[0] == (language, t.language_probability)
    assert sum(p for _, p in t.language_scores) <= 1.0001  # renormalized over the candidates
    assert words in normalize_transcript(t.text).replace("á", "a").replace("ú", "u")


async def test_english_is_detected_with_near_certainty(detecting: Transcriber) -> None:
    t = await detecting.transcribe(asterisk_prompt("en/agent-pass"))
    assert t.language == "en" and t.language_probability > 0.9
    assert "password" in t.text.lower()


async def test_pinned_transcriber_shares_the_model_and_reports_no_detection(detecting: Transcriber) -> None:
    spanish = detecting.for_language("es")
    assert spanish.language == "es" and detecting.language is None  # the original still detects
    t = await spanish.transcribe(asterisk_prompt("es/conf-onlyperson"))
    assert t.language == "es" and t.language_probability == 1.0 and t.language_scores == ()
    assert "conferencia" in t.text.lower()


async def test_detection_costs_little_on_the_short_window(detecting: Transcriber) -> None:
    """Detection reads the encoder output the decode uses anyway: a pinned decode costs about the same."""
    pcm = asterisk_prompt("es/conf-onlyperson")
    pinned = detecting.for_language("es")
    await pinned.transcribe(pcm)  # warm
    times: dict[str, list[float]] = {"detect": [], "pinned": []}
    for _ in range(2):
        for name, transcriber in (("detect", detecting), ("pinned", pinned)):
            started = time.perf_counter()
            await transcriber.transcribe(pcm)
            times[name].append(time.perf_counter() - started)
    detect, fixed = min(times["detect"]), min(times["pinned"])
    print(f"detect {detect * 1000:.0f} ms, pinned {fixed * 1000:.0f} ms")
    assert detect < fixed * 1.5 + 0.1


async def test_english_only_model_cannot_be_pinned_to_another_language(
    tiny: WhisperModel, executor: ModelExecutor
) -> None:
    with pytest.raises(ValueError, match="multilingual"):
        Transcriber(tiny, executor, sample_rate_in=RATE).for_language("es")
