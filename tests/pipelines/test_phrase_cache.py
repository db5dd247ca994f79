"""The phrase cache: fixed lines synthesized once per process and voice, normalized for speech, shared
by concurrent callers, never caching a failure."""

from __future__ import annotations

import asyncio

import pytest

from pipelines.executor import ModelExecutor
from pipelines.phrase_cache import PhraseCache
from pipelines.speech_text import SpeechOptions
from pipelines.tts import PiperSynthesizer
from tests.pipelines.conftest import CountingSynth

GREETING = "Hello, thank you for calling."


async def test_phrase_cache_synthesizes_each_line_once(
    synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    counting = CountingSynth(synth)
    cache = PhraseCache(counting, out_rate=8000)
    assert cache.get(GREETING) is None

    await cache.warm([GREETING, "Please hold.", GREETING], executor)
    assert sorted(counting.calls) == sorted([GREETING, "Please hold."])
    first = cache.get(GREETING)
    assert first is not None
    assert 0.8 <= len(first) / 2 / 8000 <= 4.0  # stored at the call rate, not the voice rate
    assert cache.get(GREETING) is first
    assert await cache.get_or_synthesize(GREETING, executor) is first
    await cache.warm([GREETING], executor)
    assert len(counting.calls) == 2
    assert len(cache) == 2


async def test_a_second_cache_on_the_same_voice_finds_the_lines_made(
    synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    """A reload (or a second service in one process) warms the same lines again: nothing is synthesized
    twice on one voice, while another voice, rate or way of saying numbers makes its own."""
    counting = CountingSynth(synth)
    await PhraseCache(counting, out_rate=8000).warm([GREETING], executor)
    again = PhraseCache(counting, out_rate=8000)
    await again.warm([GREETING], executor)
    assert counting.calls == [GREETING] and again.get(GREETING) is not None and len(again) == 1
    await PhraseCache(counting, out_rate=16000).warm([GREETING], executor)
    await PhraseCache(counting, 8000, SpeechOptions(day_first=False)).warm([GREETING], executor)
    other = CountingSynth(synth)
    await PhraseCache(other, out_rate=8000).warm([GREETING], executor)
    assert counting.calls == [GREETING] * 3 and other.calls == [GREETING]


async def test_concurrent_requests_share_one_synthesis(
    synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    counting = CountingSynth(synth)
    cache = PhraseCache(counting, out_rate=16000)
    line = "One moment while I transfer you."
    impatient = asyncio.create_task(cache.get_or_synthesize(line, executor))
    await asyncio.sleep(0)  # it starts the synthesis...
    impatient.cancel()  # ...and hangs up: the others must still get their audio
    results = await asyncio.gather(*(cache.get_or_synthesize(line, executor) for _ in range(3)))
    assert impatient.cancelled()
    assert counting.calls == [line]
    assert results[0] == results[1] == results[2] == cache.get(line)


async def test_failed_synthesis_is_not_cached(executor: ModelExecutor) -> None:
    class Broken:
        sample_rate = 22050
        attempts = 0

        def synthesize(self, text: str) -> bytes:
            Broken.attempts += 1
            raise RuntimeError("voice crashed")

    cache = PhraseCache(Broken(), out_rate=8000)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="voice crashed"):
            await cache.get_or_synthesize("Hi.", executor)
    assert Broken.attempts == 2
    assert cache.get("Hi.") is None


async def test_phrase_cache_speaks_normalized_text(synth: PiperSynthesizer, executor: ModelExecutor) -> None:
    counting = CountingSynth(synth)
    line = "Your total is ₹1,250.50."
    await PhraseCache(counting, out_rate=8000).get_or_synthesize(line, executor)
    assert counting.calls == ["Your total is one thousand two hundred fifty rupees and fifty paise."]
