"""The fixed phrases a bot says on every call (greetings, fallbacks, handoff lines), synthesized once
per process and voice and kept at the call rate, ready to play at once."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import ClassVar

from pipelines.executor import ModelExecutor
from pipelines.speech_text import SpeechOptions
from pipelines.tts import Synthesizer, render_speech

_PhraseKey = tuple[str, int, SpeechOptions | None]
"""A fixed line: its text, the rate it plays at, and how numbers and dates in it are said."""


class PhraseCache:
    """Fixed lines synthesized once per process and kept as PCM at the call rate, ready to play at once.

    Keyed by (text, out_rate, options) and shared by every cache on the same synthesizer in the process:
    a reload, or a second service in one process (the tests), finds its greetings and fallbacks made.
    Concurrent requests for a line not yet cached share one synthesis. Lines are normalized for speech
    exactly as streamed replies are, so both say "₹1,250" the same way.
    """

    _made: ClassVar[weakref.WeakKeyDictionary[Synthesizer, dict[_PhraseKey, bytes]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, synth: Synthesizer, out_rate: int, options: SpeechOptions | None = None) -> None:
        self.synth = synth
        self.out_rate = out_rate
        self.options = options
        self._pcm: dict[_PhraseKey, bytes] = {}
        try:
            self._shared: dict[_PhraseKey, bytes] = PhraseCache._made.setdefault(synth, {})
        except TypeError:  # a synthesizer that cannot be weakly referenced: this cache alone
            self._shared = {}
        self._pending: dict[_PhraseKey, asyncio.Task[bytes]] = {}

    def __len__(self) -> int:
        return len(self._pcm)

    def get(self, text: str) -> bytes | None:
        """The cached PCM for `text` at `out_rate`, or None if it has not been synthesized (or warmed)."""
        return self._pcm.get((text, self.out_rate, self.options))

    async def warm(self, lines: Iterable[str], executor: ModelExecutor) -> None:
        """Have every line ready: made by this process before (on the same voice), or synthesized now
        (in parallel, as far as the executor allows)."""
        await asyncio.gather(*(self.get_or_synthesize(line, executor) for line in dict.fromkeys(lines)))

    async def get_or_synthesize(self, text: str, executor: ModelExecutor) -> bytes:
        """The cached PCM for `text`, synthesizing and caching it first if needed."""
        key = (text, self.out_rate, self.options)
        cached = self._pcm.get(key)
        if cached is not None:
            return cached
        made = self._shared.get(key)
        if made is not None:
            self._pcm[key] = made
            return made
        task = self._pending.get(key)
        if task is None:
            task = asyncio.create_task(self._synthesize(key, executor), name=f"phrase {text[:30]!r}")
            self._pending[key] = task
        # Shielded: one caller hanging up (cancelled) must not cancel the synthesis others wait for.
        return await asyncio.shield(task)

    async def _synthesize(self, key: _PhraseKey, executor: ModelExecutor) -> bytes:
        text, out_rate, _ = key
        try:
            pcm = await executor.run(self._render, text, out_rate)
            self._pcm[key] = self._shared[key] = pcm
            return pcm
        finally:
            del self._pending[key]  # on failure too, so a later request can try again

    def _render(self, text: str, out_rate: int) -> bytes:
        return render_speech(self.synth, text, out_rate, self.options)
