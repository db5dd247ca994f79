"""Text to speech with Piper, and the cache of fixed phrases (greetings, handoff lines) said on every call.

Synthesis blocks (onnxruntime); callers run it on the shared `ModelExecutor`, never on the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol

from piper import PiperVoice

from pipelines.audio import resample
from pipelines.executor import ModelExecutor


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

    _loaded: ClassVar[dict[tuple[Path, Path], PiperSynthesizer]] = {}
    _load_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, voice: PiperVoice, onnx_path: Path) -> None:
        self._voice = voice
        self.onnx_path = onnx_path

    @classmethod
    def load(cls, onnx_path: str | Path, config_path: str | Path | None = None) -> PiperSynthesizer:
        """Load the voice once per process (blocking, about a second) and return the shared instance.

        `config_path` defaults to the .onnx.json beside the model, as Piper voices are distributed.
        """
        onnx = Path(onnx_path).resolve()
        config = Path(config_path).resolve() if config_path is not None else Path(f"{onnx}.json")
        key = (onnx, config)
        # One lock for all voices: loading is rare and a second caller must wait for the first load
        # rather than load the same 60 MB model again.
        with cls._load_lock:
            synth = cls._loaded.get(key)
            if synth is None:
                synth = cls(PiperVoice.load(onnx, config_path=config), onnx)
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


class PhraseCache:
    """Fixed lines synthesized once per process and kept as PCM at the call rate, ready to play at once.

    Keyed by (text, out_rate). Concurrent requests for a line not yet cached share one synthesis.
    """

    def __init__(self, synth: Synthesizer, out_rate: int) -> None:
        self.synth = synth
        self.out_rate = out_rate
        self._pcm: dict[tuple[str, int], bytes] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[bytes]] = {}

    def __len__(self) -> int:
        return len(self._pcm)

    def get(self, text: str) -> bytes | None:
        """The cached PCM for `text` at `out_rate`, or None if it has not been synthesized."""
        return self._pcm.get((text, self.out_rate))

    async def warm(self, lines: Iterable[str], executor: ModelExecutor) -> None:
        """Synthesize every line not cached yet (in parallel, as far as the executor allows)."""
        await asyncio.gather(*(self.get_or_synthesize(line, executor) for line in dict.fromkeys(lines)))

    async def get_or_synthesize(self, text: str, executor: ModelExecutor) -> bytes:
        """The cached PCM for `text`, synthesizing and caching it first if needed."""
        key = (text, self.out_rate)
        cached = self._pcm.get(key)
        if cached is not None:
            return cached
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._synthesize(key, executor), name=f"phrase {text[:30]!r}")
            self._pending[key] = task
        # Shielded: one caller hanging up (cancelled) must not cancel the synthesis others wait for.
        return await asyncio.shield(task)

    async def _synthesize(self, key: tuple[str, int], executor: ModelExecutor) -> bytes:
        text, out_rate = key
        try:
            pcm = await executor.run(self._render, text, out_rate)
            self._pcm[key] = pcm
            return pcm
        finally:
            del self._pending[key]  # on failure too, so a later request can try again

    def _render(self, text: str, out_rate: int) -> bytes:
        return resample(self.synth.synthesize(text), self.synth.sample_rate, out_rate)
