"""A bot's reference checks: names that point at nothing (departments, tools, intents, webhooks, signals),
and languages with a voice that are not fully translated; `load_settings` gives each its file:line:key."""

from __future__ import annotations

import re

from agent.config.actions import BUILTIN_TOOLS, ActionSpec
from agent.config.base import NAME
from agent.config.bot import BotConfig, Condition
from agent.config.phrases import TRANSLATED_PHRASES
from agent.config.yamlfile import KeyPath
from agent.escalation.conditions import ConditionError, compares
from agent.escalation.conditions import parse as parse_condition
from agent.escalation.names import BUILTIN_INTENT_NAMES, SIGNALS

Problem = tuple[KeyPath, str]
"""Where in the bot's file (a key path) and what is wrong."""


def reference_problems(bot: BotConfig) -> list[Problem]:
    """Names that point at nothing: departments, tools and intents that are not defined."""
    problems: list[Problem] = []
    intents = {i.name for i in bot.intents}
    tools = {t.name for t in bot.tools}
    for name in bot.departments:
        if not re.match(NAME, name):
            problems.append((("departments", name), "department names are lower_case_words"))
    for name, dept in bot.departments.items():
        for j, intent_name in enumerate(dept.intents):
            if intent_name not in intents:
                problems.append((("departments", name, "intents", j), f"no intent named {intent_name!r}"))
    for i, intent in enumerate(bot.intents):
        problems += _action_problems(bot, ("intents", i, "actions"), intent.actions, tools)
    for name, dept in bot.departments.items():
        loc: KeyPath = ("departments", name, "if_unanswered")
        problems += _action_problems(bot, loc, dept.if_unanswered, tools, tools_allowed=False)
    for i, rule in enumerate(bot.escalation.rules):
        loc = ("escalation", "rules", i, "then")
        problems += _action_problems(bot, loc, rule.then, tools, tools_allowed=False)
        problems += [(("escalation", "rules", i, "when"), p) for p in _condition_problems(bot, rule.when)]
    problems += _language_problems(bot, tools)
    failure = bot.escalation.failure_department
    if failure is not None and failure not in bot.departments:
        problems.append((("escalation", "failure_department"), f"no department {failure!r}"))
    seen: set[str] = set()
    for i, intent in enumerate(bot.intents):
        if intent.name in seen:
            problems.append((("intents", i, "name"), f"intent {intent.name!r} is defined twice"))
        seen.add(intent.name)
    return problems


def _language_problems(bot: BotConfig, tools: set[str]) -> list[Problem]:
    """Every language with a voice is fully translated: all fixed phrases, every scripted reply."""
    langs = bot.languages
    problems = _action_problems(
        bot, ("languages", "unsupported"), langs.unsupported, tools, tools_allowed=False
    )
    if (langs.voices or langs.unsupported) and not langs.detect:
        problems.append((("languages", "detect"), "voices and unsupported need detect: true"))
    if langs.detect and bot.asr_model == "tiny.en":
        problems.append(
            (("languages", "detect"), "needs a multilingual asr_model (base): tiny.en is English-only")
        )
    if bot.language in langs.voices:
        problems.append((("languages", "voices", bot.language), "the bot's own language uses `voice`"))
    for code in langs.voices:
        missing = [name for name in TRANSLATED_PHRASES if name not in langs.phrases.get(code, {})]
        if missing:
            problems.append((("languages", "phrases", code), f"missing phrases: {', '.join(missing)}"))
        for i, intent in enumerate(bot.intents):
            if intent.reply and code not in intent.replies:
                problems.append((("intents", i, "replies"), f"no reply in {code} (a voice speaks {code})"))
    return problems


def _condition_problems(bot: BotConfig, when: Condition) -> list[str]:
    try:
        node = parse_condition(when)
    except ConditionError as exc:
        return [str(exc)]
    out: list[str] = []
    intents = {i.name for i in bot.intents} | set(BUILTIN_INTENT_NAMES)
    for compare in compares(node):
        if compare.signal not in SIGNALS:
            out.append(f"no signal named {compare.signal!r} (signals: {', '.join(SIGNALS)})")
        elif compare.signal == "intent" and compare.value is not None and compare.value not in intents:
            out.append(f"no intent named {compare.value!r} (intents: {', '.join(sorted(intents))})")
    return out


def _action_problems(
    bot: BotConfig,
    loc: KeyPath,
    actions: list[ActionSpec],
    tools: set[str],
    *,
    tools_allowed: bool = True,
) -> list[Problem]:
    out: list[Problem] = []
    for j, action in enumerate(actions):
        if action.tool is not None and not tools_allowed:
            out.append(((*loc, j, "tool"), "tools run from intents or the LLM, not from here"))
            continue
        if action.notify is not None and action.notify not in bot.webhooks:
            known = ", ".join(sorted(bot.webhooks)) or "none defined"
            out.append(((*loc, j, "notify"), f"no webhook {action.notify!r} (webhooks: {known})"))
        if action.transfer is not None and action.transfer not in bot.departments:
            known = ", ".join(sorted(bot.departments)) or "none defined"
            out.append(((*loc, j, "transfer"), f"no department {action.transfer!r} (departments: {known})"))
        if action.tool is not None and action.tool not in tools | BUILTIN_TOOLS:
            out.append(((*loc, j, "tool"), f"no tool named {action.tool!r}"))
    return out
