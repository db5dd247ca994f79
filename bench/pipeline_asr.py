"""Real speech for the pipeline benchmark: Asterisk's 8 kHz IVR prompts, their transcripts, false splits
and offline transcription.

False splits are counted with the service's own `TurnDetector`, configured from a bot's `turn_taking`
exactly as `CallSession` does, fed the prompt in 20 ms frames between stretches of line silence: the
detector is pure and deterministic, so this is what the service decides for the same audio (the live
ASR run cross-checks it at the shipped setting).
"""

from __future__ import annotations

import asyncio
import gzip
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agent.config.bot import TurnTaking
from pipelines.asr import Transcriber, load_whisper
from pipelines.audio import read_wav, resample
from pipelines.executor import ModelExecutor
from pipelines.models import whisper_model_dir
from pipelines.text import corpus_wer, normalize_transcript, word_errors
from pipelines.turns import TurnDetector, TurnDiscarded, TurnEnded, TurnEvent

ASTERISK = Path("/usr/share/asterisk/sounds/en")
TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
RATE = 8000
FRAME = RATE // 50  # samples in 20 ms
_INNER_PAUSE = re.compile(r"[,.;:?!…]\s+\S")  # punctuation with words after it: more than one clause


@dataclass(frozen=True)
class Prompt:
    """One Asterisk prompt: its name ("agent-pass", "digits/7"), transcript and 8 kHz PCM."""

    name: str
    text: str
    pcm: bytes

    @property
    def seconds(self) -> float:
        """Its length."""
        return len(self.pcm) / 2 / RATE

    @property
    def multi_clause(self) -> bool:
        """Its transcript has punctuation inside it: the speaker pauses within the prompt."""
        return bool(_INNER_PAUSE.search(self.text.strip(" .…")))  # "...to exit the menu." is one clause


@cache
def load_prompts(max_s: float = 25.0) -> tuple[Prompt, ...]:
    """Every prompt with a wav file and a spoken transcript, at most `max_s` long."""
    if not TRANSCRIPTS.is_file():
        raise FileNotFoundError(f"{TRANSCRIPTS} is missing: `make debs` installs the Asterisk prompts")
    out = []
    for line in gzip.open(TRANSCRIPTS, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        name, text = name.strip(), text.strip()
        path = ASTERISK / f"{name}.wav"
        # "[beep tone]", "<beep ascending>": a sound, not speech.
        if not sep or name.startswith(";") or "[" in text or "<" in text or not normalize_transcript(text):
            continue
        if not path.is_file():
            continue
        pcm, rate = read_wav(path)
        prompt = Prompt(name, text, resample(pcm, rate, RATE))
        if 0.3 <= prompt.seconds <= max_s:
            out.append(prompt)
    return tuple(sorted(out, key=lambda p: p.name))


def spread(prompts: tuple[Prompt, ...] | list[Prompt], n: int) -> list[Prompt]:
    """`n` prompts spread evenly over the list (deterministic)."""
    if n >= len(prompts):
        return list(prompts)
    return [prompts[i * len(prompts) // n] for i in range(n)]


def detector_for(end_silence_ms: int) -> TurnDetector:
    """The support_desk turn detector with another end-of-turn silence, built as CallSession builds it."""
    tt = TurnTaking(end_silence_ms=end_silence_ms)
    return TurnDetector(RATE, tt.turn_config())


def _turn_events(pcm: bytes, end_silence_ms: int, lead_s: float = 0.5) -> list[TurnEvent]:
    """The detector's events when `pcm` is spoken once between stretches of line silence."""
    detector = detector_for(end_silence_ms)
    audio = bytes(2 * int(lead_s * RATE)) + pcm + bytes(2 * (RATE * (end_silence_ms + 500) // 1000))
    audio += bytes(-len(audio) % (2 * FRAME))
    return [e for i in range(0, len(audio), 2 * FRAME) for e in detector.feed(audio[i : i + 2 * FRAME])]


def count_turns(pcm: bytes, end_silence_ms: int) -> tuple[int, int]:
    """(turns ended, turns discarded) when `pcm` is spoken once between stretches of line silence."""
    events = _turn_events(pcm, end_silence_ms)
    return sum(isinstance(e, TurnEnded) for e in events), sum(isinstance(e, TurnDiscarded) for e in events)


def turn_audio(pcm: bytes, end_silence_ms: int) -> list[bytes]:
    """The audio of each turn the detector cuts from `pcm` (pre-roll and tail included): what the
    service hands to ASR when the prompt is spoken as a caller turn."""
    return [e.audio for e in _turn_events(pcm, end_silence_ms) if isinstance(e, TurnEnded)]


def false_splits(prompts: list[Prompt], grid: list[int]) -> dict[str, Any]:
    """Per end-of-turn silence: how many multi-clause prompts became two or more turns."""
    by_value: dict[str, Any] = {}
    for value in grid:
        counts = [count_turns(p.pcm, value)[0] for p in prompts]
        heard = [c for c in counts if c >= 1]
        split = [p.name for p, c in zip(prompts, counts, strict=True) if c >= 2]
        by_value[str(value)] = {
            "prompts": len(prompts),
            "split": len(split),
            "missed": len(counts) - len(heard),
            "split_rate": round(len(split) / max(len(heard), 1), 4),
            "examples": split[:5],
        }
    return by_value


def recommend(splits: dict[str, Any], candidates: list[int], limit: float = 0.05) -> int | None:
    """The lowest end-of-turn silence whose false-split rate is at most `limit`."""
    ok = [v for v in candidates if str(v) in splits and splits[str(v)]["split_rate"] <= limit]
    return min(ok) if ok else None


@dataclass(frozen=True)
class OfflineAsr:
    """Offline transcripts per prompt: of the whole file, and of the turns the detector cuts from it."""

    whole: list[str]
    turns: list[str]
    names: tuple[str, ...] = ()

    def select(self, prompts: list[Prompt]) -> OfflineAsr:
        """The transcripts of `prompts` (all of them must have been transcribed), in their order."""
        index = {name: i for i, name in enumerate(self.names)}
        rows = [index[p.name] for p in prompts]
        names = tuple(p.name for p in prompts)
        return OfflineAsr([self.whole[i] for i in rows], [self.turns[i] for i in rows], names)


async def offline_transcripts(prompts: list[Prompt], data_dir: Path, end_silence_ms: int) -> OfflineAsr:
    """Each prompt transcribed by `Transcriber` (the service's tiny.en, guard included), as a whole
    file and turn by turn as the service's detector would cut it."""
    executor = ModelExecutor(max_workers=2)
    try:
        model = await executor.run(load_whisper, whisper_model_dir("tiny.en", data_dir))
        transcriber = Transcriber(model, executor, sample_rate_in=RATE, language="en")
        cuts = [turn_audio(p.pcm, end_silence_ms) for p in prompts]
        clips = [p.pcm for p in prompts] + [clip for turns in cuts for clip in turns]
        texts = iter([t.text for t in await asyncio.gather(*(transcriber.transcribe(c) for c in clips))])
    finally:
        executor.shutdown()
    whole = [next(texts) for _ in prompts]
    turns = [" ".join(t for t in (next(texts) for _ in cut) if t) for cut in cuts]
    return OfflineAsr(whole, turns, tuple(p.name for p in prompts))


def turn_cut_report(prompts: list[Prompt], offline: OfflineAsr) -> dict[str, Any]:
    """What cutting prompts into turns costs offline: WER on the detector's turn audio vs whole files."""
    refs = [p.text for p in prompts]
    whole = corpus_wer(zip(refs, offline.whole, strict=True))
    turns = corpus_wer(zip(refs, offline.turns, strict=True))
    return {
        "prompts": len(prompts),
        "reference_words": sum(len(normalize_transcript(r).split()) for r in refs),
        "wer_whole_file": round(whole, 4),
        "wer_turn_audio": round(turns, 4),
        "ratio_turn_audio_vs_whole_file": round(turns / whole, 3) if whole else None,
    }


def wer_report(prompts: list[Prompt], live: list[str], offline: OfflineAsr) -> dict[str, Any]:
    """Corpus WER of the pipeline's caller turns and of offline transcription, same references."""
    refs = [p.text for p in prompts]
    live_wer = corpus_wer(zip(refs, live, strict=True))
    offline_wer = corpus_wer(zip(refs, offline.whole, strict=True))
    differ: list[dict[str, Any]] = []
    for p, lv, off in zip(prompts, live, offline.whole, strict=True):
        if normalize_transcript(lv) != normalize_transcript(off):
            differ.append(
                {
                    "prompt": p.name,
                    "reference": p.text,
                    "offline": off,
                    "pipeline": lv,
                    "errors_offline": word_errors(p.text, off).errors,
                    "errors_pipeline": word_errors(p.text, lv).errors,
                }
            )
    differ.sort(key=lambda d: d["errors_pipeline"] - d["errors_offline"], reverse=True)
    same_as_cut = sum(
        normalize_transcript(lv) == normalize_transcript(cut)
        for lv, cut in zip(live, offline.turns, strict=True)
    )
    return {
        "prompts": len(prompts),
        "reference_words": sum(len(normalize_transcript(r).split()) for r in refs),
        "audio_s": round(sum(p.seconds for p in prompts), 1),
        "wer_pipeline": round(live_wer, 4),
        "wer_offline": round(offline_wer, 4),
        "ratio_pipeline_vs_offline": round(live_wer / offline_wer, 3) if offline_wer else None,
        # Where the difference comes from: the same turn audio transcribed offline gives the same text
        # when streaming and speculation add nothing; the rest is the turn cut (pre-roll, tail).
        "wer_offline_on_turn_audio": round(corpus_wer(zip(refs, offline.turns, strict=True)), 4),
        "pipeline_same_text_as_offline_on_turn_audio": same_as_cut,
        "prompts_transcribed_differently": len(differ),
        "differences": differ[:12],
    }
