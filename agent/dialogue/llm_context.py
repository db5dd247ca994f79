"""What the LLM is told: the system prompt, and the call so far trimmed to a token budget.

The full history is kept; each request gets a view of it. Oldest turns are dropped first, never the
system prompt or the turn being answered, and what dropped callers said survives as one short
extractive "Earlier in the call: …" line. After a barge-in the bot's last words are cut back to what
the caller heard, so the model never believes it said something the caller did not hear.
"""

from __future__ import annotations

import json
from typing import Any

from agent.dialogue.base import CallContext
from agent.dialogue.languages import language_name
from agent.dialogue.scripted import TemplateError, render

Message = dict[str, Any]

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4  # role and separators, per message
SUMMARY_MAX_CHARS = 480
UTTERANCE_MAX_CHARS = 120
INTERRUPTED = "[the caller interrupted]"
INTERRUPTED_AT_ONCE = "[the caller interrupted before hearing this reply]"

PHONE_RULES = """\
You are speaking on a phone call; everything you write is read aloud to the caller.
- Answer in one or two short spoken sentences.
- No lists, no markdown, no emojis, no links: plain spoken words only.
- Say numbers the way a person says them on the phone.
- When the caller asks for a person, or needs one of the departments, call transfer_to_department \
with the department's name. You cannot dial phone numbers.
- When the caller is done, say goodbye and call end_call."""


def system_prompt(ctx: CallContext) -> str:
    """The bot's persona, the call's facts, and the fixed phone rules."""
    v = ctx.variables()
    persona = ctx.bot.persona.strip()
    try:
        persona = render(persona, v)  # a persona may name call variables, e.g. {caller_number}
    except (TemplateError, ValueError, IndexError):
        pass  # braces meant literally
    facts = [
        f"You answer the phone for {v['bot_name']}.",
        f"It is {v['time']} on {v['date']}.",
        f"The caller's number is {v['caller_number']}." if v["caller_number"] else "",
        f"Departments: {v['department_descriptions']}." if ctx.bot.departments else "",
    ]
    parts = [persona, " ".join(f for f in facts if f), PHONE_RULES, language_rule(ctx)]
    return "\n\n".join(p for p in parts if p)


def language_rule(ctx: CallContext) -> str:
    """What the model is told once the caller's language is known to differ from the bot's own."""
    caller, reply = ctx.caller_language, ctx.reply_language
    if caller == ctx.bot.language:
        return ""
    if reply == caller:
        return f"The caller speaks {language_name(caller)}: answer in {language_name(caller)} only."
    own = language_name(reply)
    return (
        f"The caller speaks {language_name(caller)}, but this line can only answer in {own}: "
        f"answer in {own}, in short, simple words."
    )


def estimate_tokens(message: Message) -> int:
    """About four characters a token, plus a little per message."""
    chars = len(str(message.get("content") or ""))
    for call in message.get("tool_calls") or []:
        chars += len(json.dumps(call))
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= UTTERANCE_MAX_CHARS else text[: UTTERANCE_MAX_CHARS - 1].rstrip() + "…"


def summarize(dropped: list[list[Message]]) -> str | None:
    """One line quoting what the caller said in dropped turns (the latest first to survive the cap)."""
    said = [_short(str(m.get("content") or "")) for turn in dropped for m in turn if m.get("role") == "user"]
    said = [s for s in said if s]
    if not said:
        return None
    kept: list[str] = []
    size = 0
    for text in reversed(said):
        if kept and size + len(text) > SUMMARY_MAX_CHARS:
            break
        kept.insert(0, f"“{text}”")
        size += len(text) + 4
    skipped = "…; " if len(kept) < len(said) else ""
    return f"Earlier in the call: the caller said {skipped}{'; '.join(kept)}."


class ChatContext:
    """The call's messages, and the trimmed view of them sent with each request."""

    def __init__(self, system: str, *, budget_tokens: int) -> None:
        self.system = system
        self.budget_tokens = budget_tokens
        self.history: list[Message] = []
        self._turn_start = 0  # index in history of the caller message being answered
        self.dropped_turns = 0  # in the last view

    def add_caller(self, text: str) -> None:
        """A new caller turn; it and everything after it is the current turn."""
        self._turn_start = len(self.history)
        self.history.append({"role": "user", "content": text})

    def retract(self) -> None:
        """Forget the current turn: the caller's message and everything after it."""
        if self._turn_start < len(self.history) and self.history[self._turn_start].get("role") == "user":
            del self.history[self._turn_start :]
            users = [i for i, m in enumerate(self.history) if m.get("role") == "user"]
            self._turn_start = users[-1] if users else len(self.history)

    def add(self, message: Message) -> None:
        """An assistant or tool message of the current turn (or the greeting, before any caller turn)."""
        self.history.append(message)

    def turns(self) -> list[list[Message]]:
        """Earlier turns: each starts at a caller message (the first may be the greeting alone)."""
        turns: list[list[Message]] = []
        for message in self.history[: self._turn_start]:
            if message.get("role") == "user" or not turns:
                turns.append([])
            turns[-1].append(message)
        return turns

    def messages(self) -> list[Message]:
        """System prompt, a summary of dropped turns if any, the earlier turns that fit, this turn."""
        system = {"role": "system", "content": self.system}
        current = self.history[self._turn_start :]
        fixed = estimate_tokens(system) + sum(estimate_tokens(m) for m in current)
        kept = self.turns()
        sizes = [sum(estimate_tokens(m) for m in turn) for turn in kept]
        dropped: list[list[Message]] = []
        summary: Message | None = None
        while kept and fixed + sum(sizes) + (estimate_tokens(summary) if summary else 0) > self.budget_tokens:
            dropped.append(kept.pop(0))
            sizes.pop(0)
            line = summarize(dropped)
            summary = {"role": "system", "content": line} if line else None
        self.dropped_turns = len(dropped)
        head = [system, summary] if summary else [system]
        return [*head, *(m for turn in kept for m in turn), *current]

    def heard(self, said: str, heard: str) -> None:
        """Cut the bot's messages of the last turn back to the words the caller heard, and mark it."""
        assistant = [
            m for m in self.history[self._turn_start :] if m.get("role") == "assistant" and m.get("content")
        ]
        if not assistant:
            return
        left = len(heard.split())
        cut = False
        for i, message in enumerate(assistant):
            words = str(message["content"]).split()
            if cut:
                message["content"] = None
            elif left >= len(words) and i < len(assistant) - 1:
                left -= len(words)
            else:
                cut = True
                if left > 0:
                    message["content"] = " ".join(words[:left]) + " " + INTERRUPTED
                elif i == 0:
                    message["content"] = INTERRUPTED_AT_ONCE
                else:  # cut right after the previous message: the mark goes there
                    assistant[i - 1]["content"] = f"{assistant[i - 1]['content']} {INTERRUPTED}"
                    message["content"] = None
        # Text-only messages the caller never heard a word of say nothing now: drop them.
        self.history = [
            m
            for m in self.history
            if not (m.get("role") == "assistant" and m.get("content") is None and not m.get("tool_calls"))
        ]
