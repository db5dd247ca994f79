"""CallActions: what the bot does to a call beside talking, through the carrier link.

Transfers (one in flight, watched: nobody answering runs the department's `if_unanswered`), hang-up,
hold, tags, webhook notifications, a supervisor's orders, and the escalation rules that ask for them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agent.call import events as ev
from agent.call.observer import CallObserver
from agent.call.reply import ReplySlot, Spawn, Speaker
from agent.call.state import CallState, CallStates
from agent.config.actions import ActionSpec
from agent.config.bot import BotConfig
from agent.dialogue.base import CallContext, DialogueAction
from agent.escalation.notify import Notifier
from agent.escalation.rules import Firing, RuleState
from agent.escalation.signals import SignalTracker
from agent.telephony.carrier import CarrierLink, Sent

log = logging.getLogger(__name__)

TRANSFER_GRACE_S = 5.0
"""Beyond the department's ring time (timeout × loop), how long to wait for its answer event."""


@dataclass
class Transfer:
    """The transfer in flight, and how it ended (None: ringing)."""

    department: str
    started_at: float
    outcome: str | None = None


@dataclass(frozen=True)
class Notifications:
    """Where `notify` actions go: the process's notifier, the bot's current webhooks, the record's URL."""

    notifier: Notifier
    current_bot: Callable[[], BotConfig]
    record_url: str
    in_background: Callable[[Coroutine[Any, Any, None], str], None]


class CallActions:
    """Carries out actions on one call (see the module docstring)."""

    def __init__(
        self,
        ctx: CallContext,
        link: CarrierLink,
        states: CallStates,
        observer: CallObserver,
        slot: ReplySlot,
        speaker: Speaker,
        signals: SignalTracker,
        rules: RuleState,
        notifications: Notifications,
        spawn: Spawn,
    ) -> None:
        self.ctx = ctx
        self.bot = ctx.bot
        self.link = link
        self.states = states
        self.observer = observer
        self.slot = slot
        self.speaker = speaker
        self.signals = signals
        self.rules = rules
        self.notifications = notifications
        self.spawn = spawn
        self.transfer_state: Transfer | None = None
        self.tags: list[str] = []  # labels from `tag` actions

    async def do(self, action: DialogueAction) -> None:
        """Carry out a dialogue action on the call."""
        if action.kind == "transfer" and action.department:
            await self.transfer(action.department, action.reason)
        elif action.kind == "hangup":
            await self.hangup(action.reason)
        elif action.kind == "say" and action.text:
            await self.speaker.speak_fixed(action.text)
        elif action.kind == "hold_music":
            await self.hold(action.reason)
        elif action.kind == "tag" and action.tags:
            await self.tag(action.tags, action.reason)
        elif action.kind == "notify" and action.webhook:
            await self.notify(action.webhook, action.reason)
        else:
            log.warning("call %s: action %s is not supported here", self.ctx.call_id, action.kind)
            await self.observer.emit(ev.ActionUnsupported(action.kind, action.reason))

    async def _sent(self, sent: Sent, reason: dict[str, Any]) -> None:
        await self.observer.emit(ev.ActionSent(sent.kind, sent.payload, reason))

    # ----------------------------------------------------------------------------- the rules

    async def check_rules(self, trigger: str) -> Firing | None:
        """The escalation rule that fires on the signals now, if any; recorded with its reasons."""
        firing = self.rules.check(self.signals.snapshot())
        if firing is not None:
            context = {"trigger": trigger, "caller_turn": self.signals.counters["turns"]}
            firing = dataclasses.replace(firing, context=context)
            await self.observer.emit(ev.RuleFired(firing.reason()))
        return firing

    async def run_rule(self, firing: Firing) -> None:
        """A fired rule's actions, in order; a transfer without a line of its own says the handoff line."""
        reason = firing.reason()
        spoken = any(a.say for a in firing.actions)
        for spec in firing.actions:
            if spec.transfer and not spoken:
                await self.speaker.speak_fixed(self.bot.phrases.handoff)  # a handoff is never silent
            await self.do(DialogueAction.from_spec(spec, reason))

    async def dialogue_failed(self, reason: str) -> None:
        """After the fallback line: the rules see the failure; by default the caller goes to a person."""
        firing = await self.check_rules("dialogue_failure")
        if firing is not None:
            await self.run_rule(firing)
        if (firing is not None and firing.terminal) or self.states.current is CallState.HANDED_OFF:
            return
        department = self.bot.escalation.failure_department or next(iter(self.bot.departments), None)
        if department is not None:
            await self.transfer(
                department, {"trigger": "dialogue_failure", "reason": reason, "default": True}
            )

    # ----------------------------------------------------------------------------- transfers

    async def transfer(self, department: str, reason: dict[str, Any]) -> None:
        """Bridge the caller to a configured department; one transfer at a time, then monitor mode."""
        state = self.states.current
        if state in (CallState.HANDED_OFF, CallState.HUNG_UP, CallState.CLOSED):
            why = "already handed off" if state is CallState.HANDED_OFF else "call ending"
            await self.observer.emit(ev.TransferNotStarted("ignored", department, why))
            return
        if department not in self.bot.departments:  # never a number: only what the YAML configures
            await self.observer.emit(ev.TransferNotStarted("refused", department))
            return
        self.states.move(CallState.HANDED_OFF)
        dept = self.bot.departments[department]
        self.transfer_state = transfer = Transfer(department, time.monotonic())
        sent = await self.link.transfer(dept, caller_id=self.ctx.called_number or self.ctx.caller_number)
        await self.observer.emit(
            ev.TransferStarted(sent.kind, sent.payload, {**reason, "department": department}, department)
        )
        # Nobody answering is known from the events (leg b), or from the ring time running out.
        self.spawn(self._watch(transfer, dept.timeout * dept.loop + TRANSFER_GRACE_S))

    @property
    def transfer_ringing(self) -> bool:
        """A transfer is in flight and its fate unknown."""
        return self.transfer_state is not None and self.transfer_state.outcome is None

    async def _watch(self, transfer: Transfer, limit_s: float) -> None:
        await asyncio.sleep(limit_s)
        if self.transfer_state is transfer and transfer.outcome is None:
            await self.transfer_failed("no_answer")

    async def transfer_answered(self) -> None:
        """The carrier says a person took the transfer in flight."""
        transfer = self.transfer_state
        if transfer is not None and transfer.outcome is None:
            transfer.outcome = "answered"
            await self.observer.emit(ev.TransferAnswered(transfer.department))

    async def transfer_failed(self, why: str) -> None:
        """The transfer failed or nobody answered: the department's `if_unanswered`, else apology + hangup."""
        transfer = self.transfer_state
        if transfer is None or transfer.outcome is not None:
            return
        transfer.outcome = why
        await self.observer.emit(ev.TransferFailed(transfer.department, why))
        if self.states.current is not CallState.HANDED_OFF:
            return  # the call ended meanwhile: nobody left to tell
        self.states.move(CallState.LISTENING)  # the caller is ours again
        actions = self.bot.departments[transfer.department].if_unanswered
        specs = actions or [ActionSpec(say=self.bot.phrases.unanswered), ActionSpec(hangup=True)]
        reason = {"trigger": "transfer_failed", "department": transfer.department, "why": why}

        async def fallback() -> None:
            for spec in specs:
                await self.do(DialogueAction.from_spec(spec, reason))

        self.slot.start(fallback())

    # ------------------------------------------------------------------------------ the line

    async def hangup(self, reason: dict[str, Any]) -> None:
        """End the call from our side (a bridged call stays handed off: the caller was the agents')."""
        if self.states.current not in (CallState.HANDED_OFF, CallState.CLOSED):
            self.states.move(CallState.HUNG_UP)
        await self._sent(await self.link.hangup(), reason)

    async def hold(self, reason: dict[str, Any]) -> None:
        """Hold music from the bot's `hold_music` URL (a carrier play), else the hold line."""
        if self.bot.hold_music:
            await self._sent(await self.link.play(self.bot.hold_music), reason)
        else:
            await self.speaker.speak_fixed(self.bot.phrases.hold)

    async def supervise(self, kind: str, department: str | None, user: str | None) -> None:
        """A supervisor's "transfer now" or "hang up": the bot stops talking, says the handoff line
        before a transfer, and acts; recorded as a supervisor action."""
        reason: dict[str, Any] = {"by": "supervisor", "user": user or "supervisor"}
        if self.states.current.conversing:  # an answer still being worked out for the last turn is dropped
            self.states.move(CallState.TAKEN_OVER)
        await self.observer.emit(ev.SupervisorOrder(kind, department, reason))
        await self.slot.interrupt()
        action = DialogueAction(kind="transfer", department=department, reason=reason)
        if kind == "hangup":
            action = DialogueAction(kind="hangup", reason=reason)

        async def act() -> None:
            if kind == "transfer" and self.states.current is not CallState.HANDED_OFF:
                line = self.slot.start(self.speaker.speak_fixed(self.bot.phrases.handoff))  # talked over…
                await asyncio.wait({line})
            await self.do(action)  # …the supervisor's order is carried out regardless

        self.spawn(act())

    async def listened(self, user: str | None) -> None:
        """A supervisor started listening in: kept in the record's events (who heard the call)."""
        await self.observer.emit(ev.SupervisorListening(user or "supervisor"))

    # ----------------------------------------------------------------------------- labels, webhooks

    async def tag(self, tags: tuple[str, ...], reason: dict[str, Any]) -> None:
        """Label the call (kept in its record's meta, shown by the API and live views)."""
        new = [t for t in tags if t not in self.tags]
        if not new:
            return
        self.tags.extend(new)
        await self.observer.emit(ev.Tagged(new, list(self.tags), reason))

    async def notify(self, webhook: str, reason: dict[str, Any]) -> None:
        """POST the call's state to a webhook, in the background: the call goes on at once."""
        n, ctx, record = self.notifications, self.ctx, self.observer.record
        # The bot's current YAML first: a live call takes reloaded rules, which may name new webhooks.
        hook = n.current_bot().webhooks.get(webhook) or self.bot.webhooks.get(webhook)
        if hook is None:
            await self.observer.emit(ev.NotifyMissing(webhook))
            return
        payload = {
            "event": "hotline.notify",
            "webhook": webhook,
            "call_id": ctx.call_id,
            "cmiuuid": record.cmiuuid,
            "bot": ctx.bot_name,
            "caller": ctx.caller_number,
            "called": ctx.called_number,
            "state": str(self.states.shown),
            "handed_off": self.states.current is CallState.HANDED_OFF,
            "tags": list(self.tags),
            "reason": reason,
            "signals": self.signals.snapshot(),
            "last_turns": list(record.recent),
            "record": n.record_url,
            "sent_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        }
        await self.observer.emit(ev.NotifyQueued(webhook, hook.url, reason))
        observer = self.observer

        async def deliver() -> None:
            delivery = await n.notifier.send(webhook, hook, payload)
            await observer.emit(ev.NotifyDelivered(delivery.as_dict(), delivery.ok, delivery.status))

        n.in_background(deliver(), f"notify {webhook} {ctx.call_id}")
