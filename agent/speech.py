"""SpokenReply: one bot utterance on the line, from first chunk to the end or to a barge-in.

It plays clauses as they are synthesized, records the bot turn, and on interruption works out what
the caller actually heard (whole clauses played, plus the played share of the clause that was cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from agent.call_record import CallRecord
from pipelines.tts import stream_speech

if TYPE_CHECKING:
    from agent.call import CallSession


class SpokenReply:
    """Plays one reply through the session's playout and keeps its record."""

    def __init__(self, session: CallSession, record: CallRecord) -> None:
        session.current_reply = self
        self.session = session
        self.record = record
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
        s = self.session

        async def chunks() -> AsyncGenerator[tuple[str, bytes, float]]:
            first = await anext(text_deltas, None)
            if first is None:
                return
            synth, phrases = s.voice  # the language the bot answers in
            cached = phrases.get(first)
            if cached is not None:
                yield first, cached, 0.0
                rest = text_deltas
            else:
                rest = _prepend(first, text_deltas)
            speech = stream_speech(rest, synth, s.runtime.executor, s.sample_rate)
            async with contextlib.aclosing(speech) as clauses:
                async for chunk in clauses:
                    yield chunk.text, chunk.pcm, chunk.synth_ms

        await self._play(chunks())

    async def _play(self, chunks: AsyncGenerator[tuple[str, bytes, float]]) -> None:
        s, playout = self.session, self.session.playout
        playout.reset()
        s.first_audio_at = None
        turn_id: int | None = None
        try:
            async with contextlib.aclosing(chunks) as items:
                async for text, pcm, synth_ms in items:
                    if turn_id is None:
                        self.first_synth_ms = round(synth_ms, 1)
                        s.state = "speaking"
                        turn_id = await self.record.turn("bot", text, time.time())
                    self.clauses.append((text, len(pcm) // 2))
                    await playout.play(pcm, until_played=False)
                    if self.first_audio_at is None:
                        self.first_audio_at = s.first_audio_at
            await playout.drain()
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        finally:
            fields: dict[str, object] = {"text": self.said, "ended_at": time.time()}
            if self.interrupted:
                self.heard = self._heard_text(playout.cut())
                # What `break` cut never reached the caller: keep it out of the recording too.
                s.recording.cut_bot(s.caller_sample_at(time.monotonic()))
                fields.update(interrupted=True, heard_text=self.heard)
            s.state = "listening"
            await self.record.update_turn(turn_id, **fields)

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
