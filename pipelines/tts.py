"""Text to speech with Piper: replies spoken clause by clause as they stream in (fixed phrases said on
every call are cached in `pipelines.phrase_cache`).

Synthesis blocks (onnxruntime); it runs on the shared `ModelExecutor`, never on the event loop. Text is
normalized for speech first (`pipelines.speech_text`), the same way for streamed and cached lines.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import onnxruntime  # type: ignore[import-untyped]
from piper import PiperVoice
from piper.config import PiperConfig

from pipelines.audio import SUPPORTED_RATES, resample
from pipelines.executor import ModelExecutor
from pipelines.speech_text import SpeechOptions, normalize_for_speech


class Synthesizer(Protocol):
    """What the phrase cache (and any fake in tests) needs from a synthesizer."""

    @property
    def sample_rate(self) -> int:
        """Output rate of `synthesize`."""
        ...

    def synthesize(self, text: str) -> bytes:
        """Blocking: `text` as int16 mono PCM at `sample_rate`."""
        ...


class PiperSynthesizer:
    """A loaded Piper voice. One instance per voice file per process: get it with `load`.

    Thread-safe: onnxruntime sessions may run concurrently, and piper serializes its espeak phonemizer.
    """

    _loaded: ClassVar[dict[tuple[Path, Path, int], PiperSynthesizer]] = {}
    _load_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, voice: PiperVoice, onnx_path: Path) -> None:
        self._voice = voice
        self.onnx_path = onnx_path

    @classmethod
    def load(
        cls, onnx_path: str | Path, config_path: str | Path | None = None, *, threads: int = 1
    ) -> PiperSynthesizer:
        """Load the voice once per process (blocking, about a second) and return the shared instance.

        `config_path` defaults to the .onnx.json beside the model, as Piper voices are distributed.
        `threads` is onnxruntime's thread count per synthesis. One suits a small box: the executor
        already runs two model jobs (TTS or ASR) side by side. On 2 cores a lone synthesis was 0-30%
        slower than with two threads, but two at once finished in 1.2 s instead of 1.6-2.0 s.
        """
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        onnx = Path(onnx_path).resolve()
        config = Path(config_path).resolve() if config_path is not None else Path(f"{onnx}.json")
        key = (onnx, config, threads)
        # One lock for all voices: loading is rare and a second caller must wait for the first load
        # rather than load the same 60 MB model again.
        with cls._load_lock:
            synth = cls._loaded.get(key)
            if synth is None:
                synth = cls(_load_voice(onnx, config, threads), onnx)
                cls._loaded[key] = synth
        return synth

    @property
    def sample_rate(self) -> int:
        """The voice's native output rate (22050 Hz for medium voices)."""
        return self._voice.config.sample_rate

    def synthesize(self, text: str) -> bytes:
        """Blocking: the whole text as int16 mono PCM at `sample_rate` (empty for text with no speech)."""
        return b"".join(self.synthesize_sentences(text))

    def synthesize_sentences(self, text: str) -> Iterator[bytes]:
        """Blocking per item: int16 mono PCM, one chunk per sentence, so playback can start early.

        Piper normalizes each sentence to full-scale peak on its own.
        """
        for chunk in self._voice.synthesize(text):
            yield chunk.audio_int16_bytes


def _load_voice(onnx: Path, config: Path, threads: int) -> PiperVoice:
    """`PiperVoice.load` with a thread count: piper 1.8 always uses onnxruntime's default (one thread
    per core, spinning while idle), so the session is built here the way piper builds it."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle onnxruntime threads spin-wait by default, burning CPU the ASR on the same box needs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with open(config, encoding="utf-8") as file:
        voice_config = PiperConfig.from_dict(json.load(file))
    session = onnxruntime.InferenceSession(
        str(onnx), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return PiperVoice(session=session, config=voice_config)


def render_speech(
    synth: Synthesizer, text: str, out_rate: int, options: SpeechOptions | None = None
) -> bytes:
    """Blocking: `text` normalized for speech, synthesized, and resampled to `out_rate` (int16 mono)."""
    return resample(synth.synthesize(normalize_for_speech(text, options)), synth.sample_rate, out_rate)


_ENDS = ".!?…"
_PAUSES = ",;:—–"
_CLOSERS = "\"')]}”’»"
_NEVER_SENTENCE_END = frozenset("mr mrs ms dr prof st jr sr mt rs vs approx e.g i.e".split())
_ENDS_BEFORE_DIGIT = frozenset("no nos jan feb mar apr jun jul aug sep sept oct nov dec".split())


class ClauseChunker:
    """Cuts a reply streaming in as text deltas into clauses to synthesize one by one, for one reply.

    The first clause may end at a pause (, ; : —) once it is `first_min_chars` long, so the first audio
    comes fast; later clauses are whole sentences (better prosody) unless longer than `max_chars`, when
    they are cut at the last pause or space before it. Cuts only fall on whitespace followed by more
    text, so "1,250.50", "3:30", "acme.com" stay whole, and a full stop after "e.g.", "Dr.", "Rs." (or
    before a lowercase word) does not end a sentence.
    """

    def __init__(self, first_min_chars: int = 20, max_chars: int = 200) -> None:
        if not 0 <= first_min_chars < max_chars:
            raise ValueError(f"need 0 <= first_min_chars < max_chars, got {first_min_chars}, {max_chars}")
        self.first_min_chars = first_min_chars
        self.max_chars = max_chars
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        """Add text; return the clauses it completed (stripped, possibly none)."""
        self._buffer += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """The reply has ended: return the remaining clauses, and get ready for a new reply."""
        clauses = self._drain(final=True)
        if self._buffer.strip():
            clauses.append(self._buffer.strip())
        self._buffer, self._emitted = "", 0
        return clauses

    def _drain(self, final: bool) -> list[str]:
        clauses = []
        while (cut := self._next_cut(final)) is not None:
            clause, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:].lstrip()
            if clause:
                clauses.append(clause)
                self._emitted += 1
        return clauses

    def _next_cut(self, final: bool) -> int | None:
        """Where the next clause ends, or None until more text decides it."""
        text = self._buffer
        for i, char in enumerate(text[: self.max_chars + 1]):
            if char == "\n" and text[:i].strip():
                return i
            pause = self._emitted == 0 and char in _PAUSES
            if not (char in _ENDS or pause):
                continue
            end = i + 1
            while end < len(text) and text[end] in _ENDS + _CLOSERS:
                end += 1
            if end == len(text):  # what comes next decides: "1,250", "3.5", a closing quote
                return end if final else None
            if not text[end].isspace():  # inside a number, a time, an address
                continue
            if pause and len(text[:end].strip()) < self.first_min_chars:
                continue
            if char == ".":  # a sentence's end, or an abbreviation's dot? The next word tells.
                after = len(text) - len(text[end:].lstrip())
                if after == len(text):
                    return end if final else None
                if _is_abbreviation(text[:end], text[after]):
                    continue
            return end
        return self._hard_cut(text) if len(text) > self.max_chars else None

    def _hard_cut(self, text: str) -> int | None:
        """Where to cut a sentence longer than `max_chars`: at the last pause, else between two words
        (not between "3:30" and "pm"), else after anything but an abbreviation, else at any space."""
        gaps = [m for m in re.finditer(r"\s+(?=\S)", text[: self.max_chars + 1]) if m.start() > 0]
        pauses = [m for m in gaps if text[m.start() - 1] in _PAUSES + ")"]
        between_words = [m for m in gaps if text[m.start() - 1].isalpha() and text[m.end()].isalpha()]
        free = [m for m in gaps if not _is_abbreviation(text[: m.start()], text[m.end()])]
        for cuts in (pauses, between_words, free, gaps):
            if cuts:
                return cuts[-1].end()
        return None  # one token longer than max_chars: wait for a space


def _is_abbreviation(clause: str, next_char: str) -> bool:
    """Whether the full stop ending `clause` belongs to an abbreviation rather than ending a sentence."""
    if not clause.endswith("."):
        return False
    word = clause.rsplit(None, 1)[-1].lstrip(_CLOSERS + "(").rstrip(_CLOSERS + ".").lower()
    return (
        next_char.islower()
        or word in _NEVER_SENTENCE_END
        or (word in _ENDS_BEFORE_DIGIT and next_char.isdigit())
        or (len(word) == 1 and word.isalpha())  # an initial: "J. Smith"
    )


@dataclass(frozen=True)
class SpeechChunk:
    """One clause of a streamed reply, synthesized and ready to play."""

    text: str
    """The clause as written in the reply (for the transcript and for trimming to what was heard)."""
    spoken: str
    """What was synthesized: `text` normalized for speech."""
    pcm: bytes
    """int16 mono at `sample_rate`."""
    sample_rate: int
    """The call rate asked for."""
    synth_ms: float
    """Synthesis plus resampling time on the executor, without time spent queued for a worker."""

    @property
    def duration_s(self) -> float:
        """Playing time of `pcm`."""
        return len(self.pcm) / 2 / self.sample_rate


# Queues between the stages carry their items, then None (the end) or the exception that ended them.
_Clauses = asyncio.Queue[str | BaseException | None]
_Chunks = asyncio.Queue[SpeechChunk | BaseException | None]


async def stream_speech(
    text_deltas: AsyncIterator[str],
    synth: Synthesizer,
    executor: ModelExecutor,
    out_rate: int,
    *,
    chunker: ClauseChunker | None = None,
    options: SpeechOptions | None = None,
    ahead: int = 2,
) -> AsyncGenerator[SpeechChunk, None]:
    """Speak a reply while it is still being written: one `SpeechChunk` per clause, at `out_rate`.

    A clause is synthesized (on `executor`) as soon as it closes, while later text keeps streaming.
    At most `ahead` clauses are synthesized beyond the one the consumer holds; the consumer releases a
    chunk by asking for the next, so playing each chunk before asking paces synthesis to playback.
    Errors from `text_deltas` or the synthesizer are raised after the chunks before them.

    Iterate inside `contextlib.aclosing(...)`: cancelling the consumer (barge-in) then stops reading
    and synthesis at once and leaves no task behind. Unclosed, the event loop closes it a moment later.
    """
    if out_rate not in SUPPORTED_RATES:
        raise ValueError(f"sample rate {out_rate} Hz is not supported; use one of {SUPPORTED_RATES}")
    if ahead < 1:
        raise ValueError(f"ahead must be at least 1, got {ahead}")
    clauses: _Clauses = asyncio.Queue()
    chunks: _Chunks = asyncio.Queue()
    slots = asyncio.Semaphore(ahead + 1)  # the chunk the consumer holds, and `ahead` more
    tasks = [
        asyncio.create_task(_read_clauses(text_deltas, chunker or ClauseChunker(), clauses), name="tts text"),
        asyncio.create_task(
            _synthesize_clauses(clauses, chunks, slots, synth, executor, out_rate, options), name="tts synth"
        ),
    ]
    try:
        while (item := await chunks.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
            slots.release()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _read_clauses(text_deltas: AsyncIterator[str], chunker: ClauseChunker, out: _Clauses) -> None:
    try:
        async for delta in text_deltas:
            for clause in chunker.feed(delta):
                out.put_nowait(clause)
        for clause in chunker.flush():
            out.put_nowait(clause)
        out.put_nowait(None)
    except Exception as exc:  # the reply broke off: speak what came before, then raise it
        out.put_nowait(exc)
    except BaseException as exc:  # cancelled inside the text source: wake the synthesizer
        out.put_nowait(exc)
        raise


async def _synthesize_clauses(
    clauses: _Clauses,
    out: _Chunks,
    slots: asyncio.Semaphore,
    synth: Synthesizer,
    executor: ModelExecutor,
    out_rate: int,
    options: SpeechOptions | None,
) -> None:
    try:
        while isinstance(clause := await clauses.get(), str):
            await slots.acquire()
            chunk = await executor.run(_synthesize_clause, synth, clause, out_rate, options)
            if chunk.pcm:
                out.put_nowait(chunk)
            else:  # nothing to say ("..."): the slot is free again
                slots.release()
        out.put_nowait(clause)
    except Exception as exc:
        out.put_nowait(exc)


def _synthesize_clause(
    synth: Synthesizer, text: str, out_rate: int, options: SpeechOptions | None
) -> SpeechChunk:
    start = time.perf_counter()
    spoken = normalize_for_speech(text, options)
    pcm = resample(synth.synthesize(spoken), synth.sample_rate, out_rate)
    return SpeechChunk(text, spoken, pcm, out_rate, (time.perf_counter() - start) * 1000)
