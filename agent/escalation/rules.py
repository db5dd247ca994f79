"""Escalation rules of one bot, compiled once, and their state on one call (once, cooldown).

Rules are tried highest `priority` first (YAML order on a tie); the first whose condition holds and
that is not spent (`once`) or resting (`cooldown_s`) fires. A firing keeps the rule's name and the
values of every signal its condition names: the record shows why the bot did what it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config.actions import ActionSpec
from agent.config.bot import BotConfig, Rule
from agent.escalation.conditions import Node, compares, evaluate, parse


@dataclass(frozen=True)
class Firing:
    """A rule that fired: its actions, and the signal values that made it fire."""

    rule: str
    priority: int
    actions: tuple[ActionSpec, ...]
    signals: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    """Where it fired: trigger (turn, silence, dialogue_failure, llm_intent) and caller turn number."""

    @property
    def terminal(self) -> bool:
        """It hands the call over (transfer) or ends it: the bot answers no more."""
        return any(a.transfer is not None or a.kind == "hangup" for a in self.actions)

    def reason(self) -> dict[str, Any]:
        """For the record and live events."""
        return {"rule": self.rule, "priority": self.priority, "signals": self.signals, **self.context}


@dataclass(frozen=True)
class CompiledRule:
    """A rule with its condition parsed."""

    rule: Rule
    condition: Node
    order: int

    @property
    def signals(self) -> list[str]:
        """The signal names the condition reads."""
        return list(dict.fromkeys(c.signal for c in compares(self.condition)))


LANGUAGE_RULE = "language_unsupported"
"""The built-in rule of bots that detect the caller's language: `languages.unsupported` as a rule."""


def language_rule(bot: BotConfig) -> Rule | None:
    """The policy for a caller whose language has no voice, as a rule checked before all others: the
    configured actions (e.g. a transfer to an interpreter desk), or the notice, then answers as usual."""
    langs = bot.languages
    if not langs.detect:
        return None
    then = langs.unsupported or [ActionSpec(say=bot.phrases.language_notice)]
    return Rule(name=LANGUAGE_RULE, when="language_supported == false", then=then, priority=1000, once=True)


def compile_rules(bot: BotConfig) -> list[CompiledRule]:
    """The bot's rules, parsed, in the order they are tried (config validation has checked them)."""
    rules = list(bot.escalation.rules)
    if (builtin := language_rule(bot)) is not None:
        rules.append(builtin)
    compiled = [CompiledRule(rule, parse(rule.when), i) for i, rule in enumerate(rules)]
    return sorted(compiled, key=lambda c: (-c.rule.priority, c.order))


@dataclass
class RuleState:
    """One call's rule bookkeeping."""

    rules: list[CompiledRule]
    clock: Callable[[], float] = time.monotonic
    fired_at: dict[str, float] = field(default_factory=dict)

    def check(self, signals: Mapping[str, Any]) -> Firing | None:
        """The rule that fires now, if any (and remember it fired)."""
        now = self.clock()
        for compiled in self.rules:
            rule = compiled.rule
            last = self.fired_at.get(rule.name)
            if last is not None and (
                rule.once or (rule.cooldown_s is not None and now - last < rule.cooldown_s)
            ):
                continue
            if evaluate(compiled.condition, signals):
                self.fired_at[rule.name] = now
                values = {name: signals.get(name) for name in compiled.signals}
                return Firing(rule.name, rule.priority, tuple(rule.then), values)
        return None
