"""Piper synthesis with the real packaged voice, and the phrase cache."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipelines.audio import resample, rms_dbfs
from pipelines.executor import ModelExecutor
from pipelines.models import piper_voice_files
from pipelines.tts import PhraseCache, PiperSynthesizer

GREETING = "Hello, thank you for calling."


@pytest.fixture(scope="session")
def synth() -> PiperSynthesizer:
    """The real packaged voice, loaded once for the whole test session."""
    return PiperSynthesizer.load(*piper_voice_files("en_US-joe-medium"))


@pytest.fixture
async def executor() -> AsyncIterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=2)
    yield pool
    pool.shutdown()


class CountingSynth:
    """The real synthesizer, counting how often it is asked to speak."""

    def __init__(self, inner: PiperSynthesizer) -> None:
        self.inner = inner
        self.calls: list[str] = []
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self.inner.sample_rate

    def synthesize(self, text: str) -> bytes:
        with self._lock:
            self.calls.append(text)
        return self.inner.synthesize(text)


def test_load_is_cached_per_process(synth: PiperSynthesizer) -> None:
    onnx, config = piper_voice_files("en_US-joe-medium")
    assert PiperSynthesizer.load(onnx, config) is synth
    assert PiperSynthesizer.load(str(onnx)) is synth  # config defaults to the .onnx.json beside it
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert set(pool.map(lambda _: PiperSynthesizer.load(onnx), range(8))) == {synth}


def test_synthesizes_plausible_speech(synth: PiperSynthesizer) -> None:
    assert synth.sample_rate == 22050
    pcm = synth.synthesize(GREETING)
    seconds = len(pcm) / 2 / synth.sample_rate
    assert len(pcm) % 2 == 0
    assert 0.8 <= seconds <= 4.0
    assert rms_dbfs(pcm) > -35.0  # speech, not near-silence

    at_8k = resample(pcm, synth.sample_rate, 8000)
    assert abs(len(at_8k) / 2 - seconds * 8000) <= seconds * 8000 * 0.01


def test_sentences_arrive_one_by_one(synth: PiperSynthesizer) -> None:
    chunks = list(synth.synthesize_sentences("Thanks for waiting. Let me check that for you."))
    assert len(chunks) == 2
    assert all(len(c) > synth.sample_rate // 2 and rms_dbfs(c) > -35.0 for c in chunks)
    assert synth.synthesize("") == b""


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
