"""`hotline check` warnings for escalation rules: rules that can never fire.

- unreachable: a condition that contradicts itself (`turns >= 3 and turns < 2`,
  `intent == billing_question and intent == complaint`);
- shadowed: a rule tried earlier (higher priority, or the same priority and earlier in the file) has the
  same condition and may fire every time (neither `once` nor `cooldown_s`), so this one never does.
"""

from __future__ import annotations

import math

from agent.config.bot import BotConfig
from agent.escalation.conditions import All, Compare, Node, parse
from agent.escalation.rules import compile_rules


def _contradicts(compares: list[Compare]) -> str | None:
    """Why comparisons that must all hold cannot, if they cannot."""
    lows: dict[str, tuple[float, bool]] = {}
    highs: dict[str, tuple[float, bool]] = {}
    equals: dict[str, object] = {}
    for c in compares:
        if c.op == "==" and c.value is not None:
            if c.signal in equals and equals[c.signal] != c.value:
                return f"{c.signal} cannot be both {equals[c.signal]!r} and {c.value!r}"
            equals[c.signal] = c.value
        if isinstance(c.value, bool) or not isinstance(c.value, float):
            continue
        value, inclusive = c.value, c.op in (">=", "<=")
        if c.op in (">", ">="):
            old_low = lows.get(c.signal)
            if old_low is None or value > old_low[0] or (value == old_low[0] and not inclusive):
                lows[c.signal] = (value, inclusive)
        elif c.op in ("<", "<="):
            old_high = highs.get(c.signal)
            if old_high is None or value < old_high[0] or (value == old_high[0] and not inclusive):
                highs[c.signal] = (value, inclusive)
    for signal, (low, low_incl) in lows.items():
        high, high_incl = highs.get(signal, (math.inf, True))
        if low > high or (low == high and not (low_incl and high_incl)):
            return f"{signal} cannot be above {low:g} and below {high:g} at once"
    return None


def _unreachable(node: Node) -> str | None:
    if isinstance(node, Compare):
        return None
    if isinstance(node, All):
        flat = [a for a in node.args if isinstance(a, Compare)]
        if (why := _contradicts(flat)) is not None:
            return why
    return None


def rule_warnings(bot: BotConfig) -> list[str]:
    """Human-readable warnings, one per rule that can never fire."""
    out: list[str] = []
    compiled = compile_rules(bot)
    for i, rule in enumerate(compiled):
        why = _unreachable(rule.condition)
        if why is not None:
            out.append(f"escalation rule {rule.rule.name!r} can never fire: {why}")
            continue
        for earlier in compiled[:i]:
            fires_always = not earlier.rule.once and earlier.rule.cooldown_s is None
            if fires_always and parse(earlier.rule.when) == rule.condition:
                out.append(
                    f"escalation rule {rule.rule.name!r} can never fire: {earlier.rule.name!r} "
                    f"(priority {earlier.rule.priority}) has the same condition and fires every time"
                )
                break
    return out
