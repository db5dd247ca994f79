"""Answering one caller turn: the dialogue's text to speech as it streams, its tools, then its actions.

The dialogue is pumped in its own task into a queue that the spoken reply reads; a slow tool can put
a filler line into the same queue ("Let me look that order up."), so the caller hears the bot working
instead of silence, in order with the rest of the reply. When the dialogue fails (LLM down, slow
first token, broken stream, tool error in a script) the caller hears the bot's fallback line and the
failure becomes a signal for the escalation rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from agent.call import events as ev
from agent.call.actions import CallActions
from agent.call.events import AnswerLatency, TurnLatency
from agent.call.observer import CallObserver
from agent.call.reply import Speaker, SpokenReply
from agent.config.bot import BotConfig
from agent.dialogue.base import Dialogue, DialogueAction, DialogueFailure, TextDelta
from agent.dialogue.scripted import ToolRunner
from agent.dialogue.tools import ToolBox, ToolError

log = logging.getLogger(__name__)

FILLER_AFTER_S = 1.0
"""A tool still running after this long gets a filler line."""
HOLD_EVERY_S = 4.0
"""After the filler, the hold line repeats this often while the tool still runs."""


class Answerer:
    """Answers caller turns for one call (see the module docstring)."""

    def __init__(
        self,
        bot: BotConfig,
        new_dialogue: Callable[[ToolRunner], Dialogue],
        toolbox: ToolBox,
        speaker: Speaker,
        actions: CallActions,
        observer: CallObserver,
    ) -> None:
        self.bot = bot
        self.toolbox = toolbox
        self.speaker = speaker
        self.actions = actions
        self.observer = observer
        self.dialogue = new_dialogue(self.run_tool)  # its tools run here (fillers while they are slow)
        self._say_now: Callable[[str], None] | None = None  # the current reply's queue, for fillers

    async def answer(
        self, caller_text: str, speech_end: float, caller_turn: int | None, latency: TurnLatency
    ) -> None:
        """The dialogue's reply to one caller turn, spoken clause by clause, then its actions."""
        started = time.monotonic()
        actions: list[DialogueAction] = []
        first_text: list[float] = []
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in self.dialogue.reply(caller_text):
                    if isinstance(item, TextDelta):
                        if not first_text:
                            first_text.append(time.monotonic())
                        queue.put_nowait(item.text)
                    elif item.kind == "tool":  # run by the dialogue through run_tool: record it
                        await self.observer.emit(ev.ToolCalled(item.tool, item.args, item.reason))
                    else:
                        actions.append(item)
            finally:
                queue.put_nowait(None)

        producer = asyncio.create_task(pump(), name=f"dialogue {self.observer.call_id}")

        async def text_deltas() -> AsyncIterator[str]:
            while (text := await queue.get()) is not None:
                yield text
            await producer  # the dialogue's own exception, if it failed

        reply = self.speaker.reply()
        self._say_now = queue.put_nowait
        try:
            await reply.stream(text_deltas())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(caller_text, exc, reply)
            return
        finally:
            self._say_now = None
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer
            if reply.first_audio_at is not None:
                answered = AnswerLatency(
                    dialogue_first_text_ms=round((first_text[0] - started) * 1000) if first_text else None,
                    tts_first_audio_ms=reply.first_synth_ms,
                    response_ms=round((reply.first_audio_at - speech_end) * 1000),
                )
                complete = dataclasses.replace(latency, answer=answered)
                await self.observer.emit(ev.TurnAnswered(caller_turn, complete))
            if reply.interrupted:
                self.dialogue.heard(reply.said, reply.heard)
        for action in actions:
            await self.actions.do(action)

    async def _failed(self, caller_text: str, exc: Exception, reply: SpokenReply) -> None:
        """Say the fallback line; the failure is a signal for the escalation rules."""
        call_id = self.observer.call_id
        reason = exc.reason if isinstance(exc, DialogueFailure) else type(exc).__name__
        if isinstance(exc, DialogueFailure):
            log.warning("call %s: the dialogue failed (%s); saying the fallback line", call_id, reason)
        else:
            log.exception("call %s: the dialogue failed; saying the fallback line", call_id)
        await self.observer.emit(ev.DialogueFailed(caller_text, reason, reply.said))
        await self.speaker.speak_fixed(self.bot.phrases.fallback)
        await self.actions.dialogue_failed(reason)

    async def run_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run an HTTP tool for the dialogue; while it is slow the caller hears a filler, then hold lines."""
        started = time.monotonic()
        task = asyncio.ensure_future(self.toolbox.run(name, args))
        try:
            lines = [self.toolbox.filler_for(name) or self.bot.phrases.filler, self.bot.phrases.hold]
            wait, said = FILLER_AFTER_S, 0
            while not task.done():
                done, _ = await asyncio.wait({task}, timeout=wait)
                if done:
                    break
                if self._say_now is not None:
                    self._say_now(lines[min(said, 1)])
                    said += 1
                wait = HOLD_EVERY_S
            result = task.result()
        except ToolError as exc:
            elapsed = round((time.monotonic() - started) * 1000)
            await self.observer.emit(ev.ToolFailed(name, exc.kind, elapsed))
            raise
        finally:
            task.cancel()
        elapsed = round((time.monotonic() - started) * 1000)
        await self.observer.emit(ev.ToolDone(name, elapsed, said))
        return result
