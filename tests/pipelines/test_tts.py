"""Piper synthesis with the real packaged voice, clause chunking and streamed speech."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.audio import resample, rms_dbfs
from pipelines.executor import ModelExecutor
from pipelines.models import piper_voice_files
from pipelines.speech_text import normalize_for_speech
from pipelines.tts import ClauseChunker, PiperSynthesizer, SpeechChunk, stream_speech

GREETING = "Hello, thank you for calling."


@pytest.fixture
async def executor() -> AsyncIterator[ModelExecutor]:
    pool = ModelExecutor(max_workers=2)
    yield pool
    pool.shutdown()


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


def test_voice_runs_one_onnxruntime_thread_by_default(synth: PiperSynthesizer) -> None:
    # Piper itself would use one spinning thread per core; the executor already runs two jobs at once.
    assert synth._voice.session.get_session_options().intra_op_num_threads == 1
    onnx, _ = piper_voice_files("en_US-joe-medium")
    with pytest.raises(ValueError, match="threads"):
        PiperSynthesizer.load(onnx, threads=0)


# --- clause chunking -------------------------------------------------------------------------------


def chunk(text: str, step: int = 1, **options: int) -> list[str]:
    """Feed `text` in deltas of `step` characters, then flush."""
    chunker = ClauseChunker(**options)
    clauses = [clause for i in range(0, len(text), step) for clause in chunker.feed(text[i : i + step])]
    return clauses + chunker.flush()


@pytest.mark.parametrize(
    "marked",  # the clauses expected, separated by "|"
    [
        # the first clause ends at a pause once it is long enough; later ones are sentences
        "Your order 12345, placed on November 21st,|has shipped.|It should arrive in 3 to 5 days, maybe"
        " sooner.|Anything else?",
        "Sure.|Let me check that for you.",  # a short sentence is a clause: the first audio comes at once
        # numbers, times, abbreviations and addresses are never cut
        "The total is ₹1,250.50,|e.g. the fee.|Dr. Rao calls at 3:30 p.m.|Visit acme.com.|Ok.",
        # "Rs." and "No." before a number, and a full stop before a lowercase word, end nothing
        "Your refund of Rs. 500 for order No. 42 is done.|Call etc. and more!",
        'He said "yes."|Then:|\n- Track order|\n- Cancel',  # closing quotes stay; lines are clauses
        "No trailing punctuation",
    ],
)
def test_chunks_into_clauses(marked: str) -> None:
    text, clauses = marked.replace("|", " "), [clause.strip() for clause in marked.split("|")]
    assert chunk(text) == clauses
    assert chunk(text, step=len(text)) == clauses
    assert chunk("") == []


def test_long_sentences_are_cut_at_a_pause_or_between_words() -> None:
    long = "This sentence goes on, and on and on, " * 6 + "until it finally stops."
    clauses = chunk(long, max_chars=80)
    assert all(len(clause) <= 80 for clause in clauses)
    assert all(clause.endswith((",", ".")) for clause in clauses)
    words = chunk("word " * 50, max_chars=60)
    assert all(len(clause) <= 60 for clause in words) and len(words) == 5


def test_chunker_is_reusable_after_flush() -> None:
    chunker = ClauseChunker(first_min_chars=5)
    assert chunker.feed("Hello there, friend. ") == ["Hello there,"]
    assert chunker.feed("Bye") == ["friend."]  # a full stop ends a sentence once a capital follows it
    assert chunker.flush() == ["Bye"]
    assert chunker.feed("Again, once more. Yes") == ["Again,", "once more."]  # a first clause again


TOKENS = [
    *"1,250.50 ₹1,250.50, 3.5 3:30 e.g. Dr. Rs. No. acme.com etc. U.S. Hello. Sure, okay; wait: — Yes!"
    ' Why? word the order 12345. 21st, "quoted." (aside) ...'.split(),
    "x" * 30,
]
NEVER_END = ("e.g.", "Dr.", "Rs.")


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(st.sampled_from(TOKENS), max_size=40),
    gaps=st.lists(st.sampled_from([" ", "  ", "\n", " \n "]), min_size=40, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12),
    first_min=st.integers(min_value=0, max_value=40),
)
def test_chunking_keeps_every_word_whatever_the_deltas(
    words: list[str], gaps: list[str], cuts: list[int], first_min: int
) -> None:
    text = "".join(word + gap for word, gap in zip(words, gaps, strict=False))
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    chunker = ClauseChunker(first_min_chars=first_min, max_chars=120)
    clauses = [clause for a, b in itertools.pairwise(bounds) for clause in chunker.feed(text[a:b])]
    clauses += chunker.flush()
    # Joined, the clauses are the input (modulo whitespace): no word lost, none split (so no number is).
    assert " ".join(clauses).split() == text.split()
    assert all(clause == clause.strip() and clause for clause in clauses)
    assert clauses == chunk(text, step=max(len(text), 1), first_min_chars=first_min, max_chars=120)
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    used = 0
    for clause in clauses:
        assert len(clause) <= 120 or " " not in clause  # longer only if it is one long token
        used += len(clause.split())
        # Only a line break, the end, or a cut for length (clauses near max_chars) follow "e.g.".
        if clause.endswith(NEVER_END) and len(clause) < 120 - 35 and used < len(spans):
            assert "\n" in text[spans[used - 1][1] : spans[used][0]]


# --- streamed speech --------------------------------------------------------------------------------


async def deltas(text: str, pause_s: float = 0.0, fed: list[float] | None = None) -> AsyncIterator[str]:
    """`text` word by word, as an LLM streams it; `fed` gets the time each delta was handed over."""
    for token in re.findall(r"\S+\s*", text):
        if pause_s:
            await asyncio.sleep(pause_s)
        if fed is not None:
            fed.append(time.perf_counter())
        yield token


class FakeVoice:
    """A deterministic synthesizer: 10 ms of a constant per character, noting calls and threads."""

    sample_rate = 16000

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.threads: set[int] = set()

    def synthesize(self, text: str) -> bytes:
        self.calls.append(text)
        self.threads.add(threading.get_ident())
        return b"\x10\x00" * 160 * len(text)


async def collect(chunks: AsyncGenerator[SpeechChunk, None]) -> list[SpeechChunk]:
    async with aclosing(chunks):
        return [chunk async for chunk in chunks]


REPLY = (
    "Thanks, I found your order. Order 12345 was placed on November 21st and shipped the next day, so it "
    "should reach you within 3 to 5 business days. Is there anything else I can help you with today?"
)


async def test_first_audio_comes_long_before_the_whole_reply_is_synthesized(
    synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    first_clause = "Thanks, I found your order."
    whole_s = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        synth.synthesize(normalize_for_speech(REPLY))
        whole_s = min(whole_s, time.perf_counter() - start)
    waits = []
    for _ in range(2):
        fed: list[float] = []
        stream = stream_speech(deltas(REPLY, pause_s=0.02, fed=fed), synth, executor, 8000)
        async with aclosing(stream):
            first = await anext(stream)
            arrived = time.perf_counter()
            rest = [chunk async for chunk in stream]
        assert first.text == first_clause
        # The clause is complete once the next word shows its full stop ends a sentence: "Order ".
        waits.append(arrived - fed[len(first_clause.split())])
    first_audio_s = min(waits)
    print(f"\nfirst clause to first audio {first_audio_s * 1000:.0f} ms; whole reply {whole_s * 1000:.0f} ms")
    assert first_audio_s < whole_s / 2
    assert " ".join(chunk.text for chunk in [first, *rest]) == REPLY
    assert all(chunk.synth_ms > 0 for chunk in [first, *rest])


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_chunks_are_speech_at_the_call_rate(
    rate: int, synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    chunks = await collect(
        stream_speech(deltas("Thanks for waiting. Your refund of ₹500 is on its way."), synth, executor, rate)
    )
    assert [c.text for c in chunks] == ["Thanks for waiting.", "Your refund of ₹500 is on its way."]
    assert chunks[1].spoken == "Your refund of five hundred rupees is on its way."
    for c in chunks:
        assert c.sample_rate == rate and len(c.pcm) % 2 == 0
        assert 0.6 <= c.duration_s <= 5.0  # a sentence's length only if the samples really are at `rate`
        assert rms_dbfs(c.pcm) > -35.0

    fake = FakeVoice()
    exact = await collect(stream_speech(deltas("One. Two two."), fake, executor, rate))
    expected = [len(resample(fake.synthesize(text), 16000, rate)) for text in ("One.", "Two two.")]
    assert [len(c.pcm) for c in exact] == expected


async def test_synthesis_runs_on_the_executor_and_stays_two_clauses_ahead(executor: ModelExecutor) -> None:
    fake = FakeVoice()
    sentences = [f"Sentence number {word}." for word in "one two three four five six seven".split()]
    stream = stream_speech(deltas(" ".join(sentences)), fake, executor, 16000)
    async with aclosing(stream):
        first = await anext(stream)
        await asyncio.sleep(0.2)  # "playing" the first chunk: synthesis must wait, two clauses ahead
        assert len(fake.calls) == 3
        rest = [c async for c in stream]
    assert [c.text for c in [first, *rest]] == sentences
    assert threading.get_ident() not in fake.threads


async def test_clauses_with_nothing_to_say_are_skipped(executor: ModelExecutor) -> None:
    class Silent(FakeVoice):
        def synthesize(self, text: str) -> bytes:
            return b"" if text == "..." else super().synthesize(text)

    chunks = await collect(stream_speech(deltas("Hmm. ... Okay."), Silent(), executor, 16000))
    assert [c.text for c in chunks] == ["Hmm.", "Okay."]


async def test_errors_arrive_after_the_audio_before_them(executor: ModelExecutor) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "First sentence. Second"
        raise ConnectionError("LLM stream dropped")

    got: list[str] = []
    with pytest.raises(ConnectionError, match="dropped"):
        async with aclosing(stream_speech(broken(), FakeVoice(), executor, 8000)) as stream:
            async for c in stream:
                got.append(c.text)
    assert got == ["First sentence."]

    class Crashing(FakeVoice):
        def synthesize(self, text: str) -> bytes:
            raise RuntimeError("voice crashed")

    with pytest.raises(RuntimeError, match="voice crashed"):
        await collect(stream_speech(deltas("Hello."), Crashing(), executor, 8000))
    with pytest.raises(ValueError, match="11025"):
        await collect(stream_speech(deltas("Hello."), FakeVoice(), executor, 11025))


@pytest.mark.parametrize("while_", ["playing", "waiting"])
async def test_barge_in_cancels_everything_promptly(
    while_: str, synth: PiperSynthesizer, executor: ModelExecutor
) -> None:
    source_closed = asyncio.Event()
    first_played = asyncio.Event()

    async def llm() -> AsyncIterator[str]:
        try:
            yield "Thanks for waiting. Let me look that up for you right now. "
            await asyncio.sleep(3600)  # the rest of the reply is slow to come
            yield "Never said."
        finally:
            source_closed.set()

    async def reply() -> None:
        async with aclosing(stream_speech(llm(), synth, executor, 8000)) as stream:
            async for _chunk in stream:
                first_played.set()
                if while_ == "playing":
                    await asyncio.sleep(3600)  # the caller hears it while more is synthesized

    task = asyncio.create_task(reply())
    await asyncio.wait_for(first_played.wait(), 10)
    await asyncio.sleep(0.05)  # the second clause is now synthesizing or done
    start = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.perf_counter() - start < 0.1
    assert source_closed.is_set()
    assert asyncio.all_tasks() == {asyncio.current_task()}
