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
import datetime as dt
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from agent.dialogue.base import DialogueAction, DialogueFailure, TextDelta
from agent.dialogue.tools import ToolBox, ToolError
from agent.speech import SpokenReply
from agent.telephony.piopiy import bridge_action, hangup_action

if TYPE_CHECKING:
    from agent.call import CallSession

log = logging.getLogger(__name__)

FILLER_AFTER_S = 1.0
"""A tool still running after this long gets a filler line."""
HOLD_EVERY_S = 4.0
"""After the filler, the hold line repeats this often while the tool still runs."""


class Answerer:
    """Answers caller turns for one call (see the module docstring)."""

    def __init__(self, session: CallSession, toolbox: ToolBox) -> None:
        self.session = session
        self.toolbox = toolbox
        self._say_now: Callable[[str], None] | None = None  # the current reply's queue, for fillers

    async def answer(
        self, caller_text: str, speech_end: float, caller_turn: int | None, latency: dict[str, Any]
    ) -> None:
        """The dialogue's reply to one caller turn, spoken clause by clause, then its actions."""
        s = self.session
        started = time.monotonic()
        actions: list[DialogueAction] = []
        first_text: list[float] = []
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for item in s.dialogue.reply(caller_text):
                    if isinstance(item, TextDelta):
                        if not first_text:
                            first_text.append(time.monotonic())
                        queue.put_nowait(item.text)
                    elif item.kind == "tool":  # run by the dialogue through run_tool: record it
                        await s.record.action("tool", {"tool": item.tool, "args": item.args}, item.reason)
                    else:
                        actions.append(item)
            finally:
                queue.put_nowait(None)

        producer = asyncio.create_task(pump(), name=f"dialogue {s.call_id}")

        async def text_deltas() -> AsyncIterator[str]:
            while (text := await queue.get()) is not None:
                yield text
            await producer  # the dialogue's own exception, if it failed

        reply = SpokenReply(s, s.record)
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
                answered = {
                    "dialogue_first_text_ms": round((first_text[0] - started) * 1000) if first_text else None,
                    "tts_first_audio_ms": reply.first_synth_ms,
                    "response_ms": round((reply.first_audio_at - speech_end) * 1000),
                }
                latency.update(answered)
                s.runtime.metrics.turn_latency(s.bot_name, answered)  # (endpoint and ASR: CallerTurns)
                await s.record.update_turn(caller_turn, latency=latency)
            if reply.interrupted:
                s.dialogue.heard(reply.said, reply.heard)
        for action in actions:
            await self.do(action)

    async def _failed(self, caller_text: str, exc: Exception, reply: SpokenReply) -> None:
        """Say the fallback line; the failure is a signal for the escalation rules."""
        s = self.session
        reason = exc.reason if isinstance(exc, DialogueFailure) else type(exc).__name__
        if isinstance(exc, DialogueFailure):
            log.warning("call %s: the dialogue failed (%s); saying the fallback line", s.call_id, reason)
        else:
            log.exception("call %s: the dialogue failed; saying the fallback line", s.call_id)
        payload = {"caller_text": caller_text, "reason": reason, "said_before": reply.said}
        await s.record.event("dialogue", "failure", payload)
        s.publish("dialogue.failure", reason=reason)
        s.runtime.metrics.error(s.bot_name, "dialogue", reason)
        await s.speak_fixed(s.bot.phrases.fallback)
        await s.on_dialogue_failure(reason)

    async def run_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run an HTTP tool for the dialogue; while it is slow the caller hears a filler, then hold lines."""
        s = self.session
        started = time.monotonic()
        task = asyncio.ensure_future(self.toolbox.run(name, args))
        try:
            lines = [self.toolbox.filler_for(name) or s.bot.phrases.filler, s.bot.phrases.hold]
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
            s.signals.count("tool_failures")
            elapsed = round((time.monotonic() - started) * 1000)
            await s.record.event("tool", "failure", {"tool": name, "kind": exc.kind, "ms": elapsed})
            s.publish("tool.failure", tool=name, error=exc.kind)
            s.runtime.metrics.error(s.bot_name, "tool", exc.kind)
            raise
        finally:
            task.cancel()
        elapsed = round((time.monotonic() - started) * 1000)
        await s.record.event("tool", "result", {"tool": name, "ms": elapsed, "fillers": said})
        return result

    async def do(self, action: DialogueAction) -> None:
        """Carry out a dialogue action on the call."""
        s = self.session
        if action.kind == "transfer" and action.department:
            await s.transfer(action.department, action.reason)
        elif action.kind == "hangup":
            s.bot_hung_up = True
            await s.send_pcmo([hangup_action()], reason=action.reason)
        elif action.kind == "say" and action.text:
            await s.speak_fixed(action.text)
        elif action.kind == "hold_music":
            await s.play_hold(action.reason)
        elif action.kind == "tag" and action.tags:
            await self.tag(action.tags, action.reason)
        elif action.kind == "notify" and action.webhook:
            await self.notify(action.webhook, action.reason)
        else:
            log.warning("call %s: action %s is not supported here", s.call_id, action.kind)
            await s.record.action(action.kind, {"unsupported": True}, action.reason)

    async def supervise(self, kind: str, department: str | None, user: str | None) -> None:
        """A supervisor's "transfer now" or "hang up": the bot stops talking, says the handoff line
        before a transfer, and acts; recorded as a supervisor action."""
        s = self.session
        reason: dict[str, Any] = {"by": "supervisor", "user": user or "supervisor"}
        s.taken_over = True  # an answer still being worked out for the caller's last turn is dropped
        await s.record.action("supervisor", {"action": kind, "department": department}, reason)
        s.publish("supervisor", action=kind, department=department, user=reason["user"])
        if s.reply_task is not None and not s.reply_task.done():
            s.reply_task.cancel()
            if s.playout.playing:
                await s.send_control("break")
        action = DialogueAction(kind="transfer", department=department, reason=reason)
        if kind == "hangup":
            action = DialogueAction(kind="hangup", reason=reason)

        async def act() -> None:
            if kind == "transfer" and not s.handed_off:
                s.start_reply(s.speak_fixed(s.bot.phrases.handoff))  # the caller may talk over it…
                line = s.reply_task
                if line is not None:
                    await asyncio.wait({line})
            await self.do(action)  # …but the supervisor's order is carried out regardless

        s.spawn(act())

    async def listened(self, user: str | None) -> None:
        """A supervisor started listening in: kept in the record's events (who heard the call)."""
        who = user or "supervisor"
        await self.session.record.event("supervisor", "listen", {"user": who})
        self.session.publish("supervisor", action="listen", department=None, user=who)

    async def tag(self, tags: tuple[str, ...], reason: dict[str, Any]) -> None:
        """Label the call (kept in its record's meta, shown by the API and live views)."""
        s = self.session
        new = [t for t in tags if t not in s.tags]
        if not new:
            return
        s.tags.extend(new)
        await s.record.action("tag", {"tags": new}, reason)
        await s.record.merge_meta(tags=list(s.tags))
        s.publish("tags", tags=list(s.tags), added=new, reason=reason)

    async def notify(self, webhook: str, reason: dict[str, Any]) -> None:
        """POST the call's state to a webhook, in the background: the call goes on at once."""
        s = self.session
        # The bot's current YAML first: a live call takes reloaded rules, which may name new webhooks.
        current = s.runtime.settings.bots.get(s.bot_name, s.bot)
        hook = current.webhooks.get(webhook) or s.bot.webhooks.get(webhook)
        if hook is None:
            await s.record.event("notify", "failed", {"webhook": webhook, "error": "no such webhook"})
            s.runtime.metrics.error(s.bot_name, "notify", "no_such_webhook")
            return
        payload = {
            "event": "hotline.notify",
            "webhook": webhook,
            "call_id": s.call_id,
            "cmiuuid": s.cmiuuid,
            "bot": s.bot_name,
            "caller": s.ctx.caller_number,
            "called": s.ctx.called_number,
            "state": s.state,
            "handed_off": s.handed_off,
            "tags": list(s.tags),
            "reason": reason,
            "signals": s.signals.snapshot(),
            "last_turns": list(s.record.recent),
            "record": f"{s.runtime.settings.service.server.public_url.rstrip('/')}/api/calls/{s.call_id}",
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }
        await s.record.action("notify", {"webhook": webhook, "url": hook.url}, reason)
        record, publish = s.record, s.publish

        async def deliver() -> None:
            delivery = await s.runtime.notifier.send(webhook, hook, payload)
            await record.event("notify", "sent" if delivery.ok else "failed", delivery.as_dict())
            publish("notify", **delivery.as_dict())
            if not delivery.ok:
                kind = f"http_{delivery.status}" if delivery.status else "unreachable"
                s.runtime.metrics.error(s.bot_name, "notify", kind)

        s.runtime.in_background(deliver(), name=f"notify {webhook} {s.call_id}")


def transfer_pcmo(session: CallSession, department: str) -> list[dict[str, Any]]:
    """The bridge PCMO for a configured department (numbers, ring type, timeout, loop from YAML)."""
    dept = session.bot.departments[department]
    from_number = session.ctx.called_number or session.ctx.caller_number
    bridge = bridge_action(
        from_number, dept.numbers, timeout=dept.timeout, loop=dept.loop, ring_type=dept.ring_type
    )
    return [bridge]
