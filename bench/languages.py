"""Multilingual calls: language detection and Spanish WER of Whisper base on real 8 kHz speech.

Speech: Asterisk's Spanish prompts (Debian asterisk-core-sounds-es-wav, es_MX, read by a professional
voice) with their transcripts (asterisk-core-sounds-es ships core-sounds-es.txt), plus English
(core-sounds-en) as a control and the French, Italian and Russian prompts (no transcripts ship for
those: detection only). Each prompt is one caller turn, transcribed as the service does it (8 kHz in,
20 s window, greedy): with detection (open, and among the international desk's `candidates`) and
pinned to Spanish. A "call" is two consecutive prompts, pinned as `CallLanguage` pins.

WER is over Spanish text folded for comparison: lower case, accents removed (the transcript file
writes "numero", "contrasena"; Whisper writes "número", "contraseña"), punctuation dropped, digits
0-10 as Spanish words. References with sounds ("[tono simple]") are left out.
"""

from __future__ import annotations

import asyncio
import gzip
import re
import statistics
import tempfile
import unicodedata
from pathlib import Path
from typing import Any

import yaml

from agent.call.language import CallLanguage
from agent.config.bot import BotConfig
from agent.dialogue.base import LanguageChoice
from pipelines.asr import Transcriber, Transcript, load_whisper
from pipelines.audio import read_wav, resample
from pipelines.executor import ModelExecutor
from pipelines.models import whisper_model_dir
from pipelines.text import word_errors

REPO = Path(__file__).resolve().parents[1]
SOUNDS = Path("/usr/share/asterisk/sounds")
DOCS = Path("/usr/share/doc")
RATE = 8000
_DIGITS = "cero uno dos tres cuatro cinco seis siete ocho nueve diez".split()


def fold_spanish(text: str) -> str:
    """Spanish text as compared for WER (see the module docstring)."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"\b(10|[0-9])\b", lambda m: f" {_DIGITS[int(m.group(1))]} ", text)
    return " ".join(re.findall(r"[a-z0-9]+", text))


def load_prompts(language: str, max_s: float = 20.0) -> list[tuple[str, str, bytes]]:
    """(name, transcript, 8 kHz PCM) of each prompt of a language; transcript "" when none ships."""
    folder = next(iter(sorted(SOUNDS.glob(f"{language}_*_*"))), None)  # es_MX_f_Allison, fr_CA_f_June…
    if folder is None:
        raise FileNotFoundError(f"no Asterisk prompts for {language} in {SOUNDS}: `make debs` installs them")
    texts: dict[str, str] = {}
    transcripts = DOCS / f"asterisk-core-sounds-{language}" / f"core-sounds-{language}.txt.gz"
    if transcripts.is_file():
        for line in gzip.open(transcripts, "rt", encoding="utf-8", errors="replace"):
            name, sep, text = line.partition(":")
            if sep and not name.startswith(";") and "[" not in text and "<" not in text and text.strip():
                texts[name.strip()] = text.strip()
    out = []
    for path in sorted(folder.glob("*.wav")):
        if transcripts.is_file() and path.stem not in texts:
            continue
        pcm, rate = read_wav(path)
        pcm = resample(pcm, rate, RATE)
        if 0.5 <= len(pcm) / 2 / RATE <= max_s:
            out.append((path.stem, texts.get(path.stem, ""), pcm))
    return out


def spread(items: list[Any], n: int) -> list[Any]:
    """`n` items spread evenly over the list (deterministic)."""
    return items if n >= len(items) else [items[i * len(items) // n] for i in range(n)]


def desk() -> BotConfig:
    """The shipped international desk (its detection settings)."""
    return BotConfig.model_validate(
        yaml.safe_load((REPO / "prompts" / "international_desk.yaml").read_text())
    )


async def _transcribe_all(
    transcriber: Transcriber, prompts: list[tuple[str, str, bytes]]
) -> list[Transcript]:
    return [await transcriber.transcribe(pcm) for _, _, pcm in prompts]


def _detection(language: str, heard: list[Transcript]) -> dict[str, Any]:
    right = [t for t in heard if t.language == language]
    wrong: dict[str, int] = {}
    for t in heard:
        if t.language != language:
            wrong[t.language] = wrong.get(t.language, 0) + 1
    return {
        "turns": len(heard),
        "accuracy": round(len(right) / max(len(heard), 1), 3),
        "probability_median": round(statistics.median(t.language_probability for t in heard), 3)
        if heard
        else None,
        "mistaken_for": dict(sorted(wrong.items(), key=lambda kv: -kv[1])),
        "asr_ms_median": round(statistics.median(t.asr_ms for t in heard)) if heard else None,
    }


def _calls(language: str, heard: list[Transcript], bot: BotConfig) -> dict[str, Any]:
    """Two consecutive prompts make a call: pinned on which turn, and to the right language?"""
    pinned_at: list[int] = []
    right = 0
    calls = len(heard) // 2
    for i in range(calls):
        state = CallLanguage(bot, _Pinnable(), LanguageChoice())  # type: ignore[arg-type]
        for turn, transcript in enumerate(heard[2 * i : 2 * i + 2], start=1):
            found = state.observe(transcript)
            if found is not None:
                pinned_at.append(turn)
                right += found.language == language
                break
    return {
        "calls": calls,
        "pinned_right": round(right / max(calls, 1), 3),
        "pinned_at_turn_1": round(pinned_at.count(1) / max(calls, 1), 3),
        "pinned_by_turn_2": round(len(pinned_at) / max(calls, 1), 3),
    }


class _Pinnable:
    """`CallLanguage` only pins a transcriber; the bench transcribes on its own."""

    sample_rate_in = RATE

    def for_language(self, language: str | None) -> _Pinnable:
        return self


async def _measure(quick: bool) -> dict[str, Any]:
    executor = ModelExecutor(max_workers=2, name="bench-languages")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = load_whisper(whisper_model_dir("base", Path(tmp)))
        bot = desk()
        candidates = tuple(bot.languages.candidates)
        opened = Transcriber(model, executor, sample_rate_in=RATE, language=None)
        among = Transcriber(model, executor, sample_rate_in=RATE, language=None, candidates=candidates)
        spanish = opened.for_language("es")
        await spanish.transcribe(load_prompts("en")[0][2])  # first-run costs out of the figures
        es = load_prompts("es")
        es = spread(es, 40) if quick else es
        out: dict[str, Any] = {"model": "base (int8)", "window_s": 20, "candidates": list(candidates)}
        heard_open = await _transcribe_all(opened, es)
        heard_among = await _transcribe_all(among, es)
        pinned = await _transcribe_all(spanish, es)
        refs = [fold_spanish(text) for _, text, _ in es]
        counts = [
            word_errors(ref, fold_spanish(t.text), normalize=False)
            for ref, t in zip(refs, pinned, strict=True)
        ]
        detected = [
            word_errors(r, fold_spanish(t.text), normalize=False)
            for r, t in zip(refs, heard_among, strict=True)
        ]
        words = sum(c.reference_words for c in counts)
        out["es"] = {
            "prompts": len(es),
            "reference": "core-sounds-es.txt (asterisk-core-sounds-es), accents folded",
            "wer_pinned_es": round(sum(c.errors for c in counts) / max(words, 1), 4),
            "wer_detecting": round(sum(c.errors for c in detected) / max(words, 1), 4),
            "reference_words": words,
            "detection_open": _detection("es", heard_open),
            "detection_candidates": _detection("es", heard_among),
            "calls_candidates": _calls("es", heard_among, bot),
            "asr_ms_median_pinned": round(statistics.median(t.asr_ms for t in pinned)),
            "worst": sorted(
                (
                    {"prompt": name, "wer": round(c.wer, 2), "said": ref, "heard": fold_spanish(t.text)}
                    for (name, _, _), ref, c, t in zip(es, refs, counts, pinned, strict=True)
                ),
                key=lambda row: -float(str(row["wer"])),
            )[:5],
        }
        for language in ("en", "fr", "it", "ru"):
            prompts = spread(load_prompts(language), 10 if quick else 30)
            heard = await _transcribe_all(among, prompts)
            out[language] = {
                "detection_candidates": _detection(language, heard),
                "calls_candidates": _calls(language, heard, bot),
            }
        return out
    finally:
        executor.shutdown()


def run(*, quick: bool = False) -> dict[str, Any]:
    """Measure (quick: 40 Spanish prompts and 10 of each other language)."""
    return asyncio.run(_measure(quick))


def summary(figures: dict[str, Any]) -> list[str]:
    """The headline lines."""
    es = figures["es"]
    lines = [
        f"Spanish WER (base, pinned es, {es['prompts']} prompts, {es['reference_words']} words): "
        f"{es['wer_pinned_es']:.1%}; while detecting: {es['wer_detecting']:.1%}",
        f"Spanish turns detected as es: open {es['detection_open']['accuracy']:.0%}, "
        f"among candidates {es['detection_candidates']['accuracy']:.0%} "
        f"(median p {es['detection_candidates']['probability_median']})",
        f"two-turn Spanish calls pinned to es: {es['calls_candidates']['pinned_right']:.0%} "
        f"(at turn 1: {es['calls_candidates']['pinned_at_turn_1']:.0%})",
        f"ASR ms median: detecting {es['detection_candidates']['asr_ms_median']}, "
        f"pinned {es['asr_ms_median_pinned']}",
    ]
    for language in ("en", "fr", "it", "ru"):
        d = figures[language]["detection_candidates"]
        lines.append(
            f"{language}: detected {d['accuracy']:.0%} of {d['turns']} turns "
            f"(median p {d['probability_median']})"
        )
    return lines
