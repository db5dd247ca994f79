"""The bot's voice on a call: the reply in flight (ReplySlot), the Speaker, and one SpokenReply.

ReplySlot holds the one thing the bot is saying (or about to) and is the only place that interrupts
it: cancel, and clear the carrier when audio is playing. The Speaker says fixed lines and streamed
replies in the language the bot answers in. A SpokenReply plays clauses as they are synthesized,
reports the bot turn, and on interruption works out what the caller actually heard (whole clauses
played, plus the played share of the clause that was cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Protocol

from agent.call.events import BotTurnEnded, BotTurnStarted
from agent.call.language import CallLanguage
from agent.call.line import CallLine
from agent.call.observer import CallObserver
from agent.call.state import CallStates
from pipelines.executor import ModelExecutor
from pipelines.phrase_cache import PhraseCache
from pipelines.tts import Synthesizer, stream_speech


class Spawn(Protocol):
    """Starts a task of the call (see CallSession.spawn)."""

    def __call__(
        self, coro: Coroutine[Any, Any, None], *, finishes_at_close: bool = False
    ) -> asyncio.Task[None]: ...


Voices = Callable[[str], tuple[Synthesizer, PhraseCache]]
"""The voice (and its phrase cache) that speaks a language for the bot."""


class ReplySlot:
    """The one reply in flight on a call: started, interrupted (cancel + clear the line), or done."""

    def __init__(
        self, spawn: Spawn, clear: Callable[[], Awaitable[None]], playing: Callable[[], bool]
    ) -> None:
        self._spawn = spawn
        self._clear = clear
        self._playing = playing
        self.task: asyncio.Task[None] | None = None
        self.current: SpokenReply | None = None  # the utterance being (or last) played

    @property
    def active(self) -> bool:
        """A reply is under way (being worked out, or playing)."""
        return self.task is not None and not self.task.done()

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as what the bot says now."""
        self.task = self._spawn(coro)
        return self.task

    def detach(self) -> asyncio.Task[None] | None:
        """Take the reply out of the slot (to interrupt it later, see `interrupt`); the slot is empty."""
        task, self.task = self.task, None
        return task

    async def interrupt(self, task: asyncio.Task[None] | None = None) -> None:
        """Stop the reply (`task`, by default the slot's): cancel it and, if its audio is playing, clear
        the carrier so the caller stops hearing it at once; returns once it has wound up."""
        if task is None:
            task = self.detach()
        elif task is self.task:
            self.task = None
        if task is None or task.done():
            return
        playing = self._playing()
        task.cancel()
        if playing:
            await self._clear()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


class Speaker:
    """Says things on one call: fixed lines from the phrase cache and streamed replies, each a
    SpokenReply, in the language the bot answers in."""

    def __init__(
        self,
        line: CallLine,
        states: CallStates,
        observer: CallObserver,
        slot: ReplySlot,
        language: CallLanguage,
        voices: Voices,
        executor: ModelExecutor,
    ) -> None:
        self.line = line
        self.states = states
        self.observer = observer
        self.slot = slot
        self.language = language
        self.voices = voices
        self.executor = executor

    def reply(self) -> SpokenReply:
        """A new utterance; it is the slot's current one."""
        self.slot.current = reply = SpokenReply(self)
        return reply

    async def speak_fixed(self, text: str) -> None:
        """A fixed line (greeting, fallback) from the phrase cache, in the caller's language if it has it."""
        text, language = self.language.fixed_line(text)
        cache = self.voices(language)[1]
        pcm = await cache.get_or_synthesize(text, self.executor)
        await self.reply().play_fixed(text, pcm)

    async def say(self, text: str) -> None:
        """Speak a line that is not cached (synthesized clause by clause)."""

        async def one() -> AsyncIterator[str]:
            yield text

        await self.reply().stream(one())


class SpokenReply:
    """Plays one reply on the call's line and reports the bot's turn."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker
        self.clauses: list[tuple[str, int]] = []  # text, samples
        self.interrupted = False
        self.heard = ""
        self.first_audio_at: float | None = None  # monotonic: first chunk on the wire
        self.first_synth_ms: float | None = None

    @property
    def said(self) -> str:
        """Everything this reply sent to the line."""
        return " ".join(text for text, _ in self.clauses)

    async def play_fixed(self, text: str, pcm: bytes) -> None:
        """A pre-synthesized line (greeting, fallback, handoff)."""

        async def one() -> AsyncGenerator[tuple[str, bytes, float]]:
            yield text, pcm, 0.0

        await self._play(one())

    async def stream(self, text_deltas: AsyncIterator[str]) -> None:
        """A reply still being written: clauses are synthesized and played as they close.

        A first piece of text that is a cached phrase (a fixed script reply) plays at once.
        """
        sp = self.speaker

        async def chunks() -> AsyncGenerator[tuple[str, bytes, float]]:
            first = await anext(text_deltas, None)
            if first is None:
                return
            synth, phrases = sp.voices(sp.language.choice.reply)  # the language the bot answers in
            cached = phrases.get(first)
            if cached is not None:
                yield first, cached, 0.0
                rest = text_deltas
            else:
                rest = _prepend(first, text_deltas)
            speech = stream_speech(rest, synth, sp.executor, sp.line.sample_rate)
            async with contextlib.aclosing(speech) as clauses:
                async for chunk in clauses:
                    yield chunk.text, chunk.pcm, chunk.synth_ms

        await self._play(chunks())

    async def _play(self, chunks: AsyncGenerator[tuple[str, bytes, float]]) -> None:
        line, states, observer = self.speaker.line, self.speaker.states, self.speaker.observer
        line.new_reply()
        turn_id: int | None = None
        try:
            async with contextlib.aclosing(chunks) as items:
                async for text, pcm, synth_ms in items:
                    if turn_id is None:
                        self.first_synth_ms = round(synth_ms, 1)
                        states.spoke()
                        turn_id = observer.next_turn()
                        await observer.emit(BotTurnStarted(turn_id, text, time.time()))
                    self.clauses.append((text, len(pcm) // 2))
                    await line.playout.play(pcm, until_played=False)
                    if self.first_audio_at is None:
                        self.first_audio_at = line.first_audio_at
            await line.playout.drain()
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        finally:
            if self.interrupted:
                self.heard = self._heard_text(line.cut())
            states.quiet()
            await observer.emit(BotTurnEnded(turn_id, self.said, time.time(), self.interrupted, self.heard))

    def unheard(self) -> str:
        """After a cut: the clause that was cut and everything after it (to resume a false barge-in)."""
        done = len(self.heard.split())
        out: list[str] = []
        for text, _ in self.clauses:
            words = len(text.split())
            if done >= words:
                done -= words
                continue
            out.append(text)
            done = 0
        return " ".join(out)

    def _heard_text(self, heard_samples: int) -> str:
        words: list[str] = []
        for text, samples in self.clauses:
            if heard_samples >= samples:
                words.append(text)
                heard_samples -= samples
                continue
            share = heard_samples / samples if samples else 0.0
            cut = text.split()
            words.extend(cut[: int(len(cut) * share)])
            break
        return " ".join(words)


async def _prepend(first: str, rest: AsyncIterator[str]) -> AsyncGenerator[str]:
    yield first
    async for item in rest:
        yield item
