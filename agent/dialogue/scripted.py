"""The embedded default dialogue: the bot's YAML script (intents → replies → actions), no LLM needed.

Matching is built for ASR output: text is normalized, then each intent is scored by its regex
patterns, its keywords (whole words, with simple stems), and its example phrases (token overlap and
sequence similarity). The best score above a threshold wins; below it the bot asks the caller to
rephrase and counts the miss, which escalation rules see as `misunderstood_in_a_row`.
"""

from __future__ import annotations

import logging
import re
import string
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from agent.config.bot import Intent
from agent.dialogue.base import CallContext, DialogueAction, ReplyItem, TextDelta, Understanding

log = logging.getLogger(__name__)

ToolRunner = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

STOPWORDS = frozenset(
    "a an the i me my to for of is it this that and or be can you your we our on in at do does did "
    "please would could like want just so um uh hi hello".split()
)


def normalize(text: str) -> str:
    """Lower-case words and digits only, single-spaced: what ASR noise cannot change. Accents go
    (conferencia ~ conferéncia), so intents can list examples in other languages too."""
    text = unicodedata.normalize("NFKD", text.lower().replace("'", ""))
    return " ".join(re.findall(r"[a-z0-9]+", "".join(c for c in text if not unicodedata.combining(c))))


def _stem(word: str) -> str:
    # Enough for phone phrases: charged/charges/charging → charg; refunds → refund.
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _same_word(keyword: str, word: str) -> bool:
    """Stems agree, or one is a long-enough prefix of the other (complain ~ complaint)."""
    if keyword == word:
        return True
    short, long_ = sorted((keyword, word), key=len)
    return len(short) >= 5 and long_.startswith(short)


def _content_stems(text: str) -> set[str]:
    return {_stem(w) for w in text.split() if w not in STOPWORDS}


@dataclass(frozen=True)
class Match:
    """The winning intent and how sure we are."""

    intent: Intent
    score: float
    via: str  # pattern | keyword | example


class IntentMatcher:
    """Scores caller text against a bot's intents."""

    def __init__(self, intents: list[Intent], *, threshold: float = 0.5) -> None:
        self.intents = intents
        self.threshold = threshold
        self._patterns = {i.name: [re.compile(p, re.IGNORECASE) for p in i.patterns] for i in intents}
        self._keywords = {i.name: {_stem(normalize(k)) for k in i.keywords} for i in intents}
        self._examples = {i.name: [normalize(e) for e in i.examples] for i in intents}

    def score(self, intent: Intent, text: str, raw: str) -> tuple[float, str]:
        """How well `text` (normalized; `raw` as heard) fits one intent, and by which evidence."""
        best, via = 0.0, ""
        if any(p.search(raw) for p in self._patterns[intent.name]):
            best, via = 0.9, "pattern"
        stems = _content_stems(text)
        hits = sum(1 for k in self._keywords[intent.name] if any(_same_word(k, w) for w in stems))
        if hits:
            kw = min(0.85, 0.6 + 0.1 * (hits - 1))
            if kw > best:
                best, via = kw, "keyword"
        for example in self._examples[intent.name]:
            ex_stems = _content_stems(example)
            overlap = len(stems & ex_stems) / len(ex_stems) if ex_stems else 0.0
            similarity = 0.5 * overlap + 0.5 * SequenceMatcher(None, text, example).ratio()
            if similarity > best:
                best, via = similarity, "example"
        return best, via

    def match(self, text: str) -> Match | None:
        """The best intent above the threshold (first in YAML order on a tie), or None."""
        norm = normalize(text)
        if not norm:
            return None
        best: Match | None = None
        for intent in self.intents:
            score, via = self.score(intent, norm, text)
            if score >= self.threshold and (best is None or score > best.score):
                best = Match(intent, round(score, 3), via)
        return best


_SPOKEN_DIGITS = {
    "zero": "0", "oh": "0", "o": "0", "one": "1", "two": "2", "three": "3", "four": "4", "for": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9",
}  # fmt: skip


def digits_in(text: str) -> str:
    """The digits a caller said or keyed, in order: "it's 4 5 1, two three" → "45123".

    A run of spoken digit words counts only when it holds three digits or more ("for" or "one" alone
    are words); written digits always count.
    """
    out: list[str] = []
    run: list[str] = []
    written = False
    for token in [*re.findall(r"[a-z]+|\d+", text.lower()), "."]:
        digit = token if token.isdigit() else _SPOKEN_DIGITS.get(token)
        if digit is not None:
            run.append(digit)
            written = written or token.isdigit()
            continue
        if written or len("".join(run)) >= 3:
            out.extend(run)
        run, written = [], False
    return "".join(out)


class TemplateError(KeyError):
    """A reply names a variable that has no value."""


class _DottedFormatter(string.Formatter):
    """`{tool.order_status.status}` looks up nested dicts; nothing else (no attribute access)."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        value: Any = kwargs
        for part in field_name.split("."):
            if not isinstance(value, Mapping) or part not in value:
                raise TemplateError(field_name)
            value = value[part]
        return value, field_name


def render(template: str, variables: Mapping[str, Any]) -> str:
    """Fill `{name}` / `{a.b.c}` from variables; TemplateError names a missing one."""
    return _DottedFormatter().vformat(template, (), dict(variables))


class ScriptedDialogue:
    """Answers from the bot's intents; tools run through `run_tool` when the script asks for them."""

    def __init__(
        self, ctx: CallContext, *, run_tool: ToolRunner | None = None, threshold: float = 0.5
    ) -> None:
        self.ctx = ctx
        self.matcher = IntentMatcher(ctx.bot.intents, threshold=threshold)
        self.run_tool = run_tool
        self.understanding = Understanding()
        self.last_reply = ""
        self.pending: Intent | None = None  # asked for a missing value; the next turn may complete it
        self._before_last: tuple[Understanding, str, Intent | None] = (self.understanding, "", None)

    async def reply(self, caller_text: str) -> AsyncIterator[ReplyItem]:
        """Match, run the intent's tools, speak its reply, then hand over its other actions."""
        language = self.ctx.reply_language
        phrases = self.ctx.bot.phrases_in(language)
        self._before_last = (self.understanding, self.last_reply, self.pending)
        found = self.matcher.match(caller_text)
        pending, self.pending = self.pending, None
        if (
            pending is not None
            and (found is None or found.intent.name == pending.name)
            and digits_in(caller_text)
        ):
            found = Match(pending, 1.0, "pending")  # "It's 4 5 1 2 3." answers "What's your order number?"
        if found is None:
            misses = self.understanding.misunderstood_in_a_row + 1
            self.understanding = Understanding(misunderstood=True, misunderstood_in_a_row=misses)
            self.last_reply = phrases.rephrase
            yield TextDelta(phrases.rephrase)
            return
        intent = found.intent
        self.understanding = Understanding(intent=intent.name, confidence=found.score)
        reason = {"intent": intent.name, "confidence": found.score, "matched_by": found.via}
        variables = {**self.ctx.variables(), "caller_text": caller_text, "digits": digits_in(caller_text)}
        tools: dict[str, Any] = {}
        for spec in intent.actions:
            if spec.tool is None:
                continue
            args = {
                k: render(v, variables) if isinstance(v, str) else v for k, v in (spec.args or {}).items()
            }
            if intent.ask and any(v == "" for v in args.values()):
                self.pending = intent  # a value is missing: ask for it, finish on the next turn
                self.last_reply = intent.ask
                yield TextDelta(intent.ask)
                return
            yield DialogueAction(kind="tool", tool=spec.tool, args=args, reason=reason)
            if self.run_tool is None:
                raise RuntimeError(f"intent {intent.name} needs tool {spec.tool}, and no tool runner is set")
            tools[spec.tool] = await self.run_tool(spec.tool, args)
        reply = (
            intent.replies.get(language, intent.reply) if language != self.ctx.bot.language else intent.reply
        )
        if reply:
            text = render(reply, {**variables, "tool": tools})
            self.last_reply = text
            yield TextDelta(text)
        for spec in intent.actions:
            if spec.tool is None:
                yield DialogueAction.from_spec(spec, reason)
        if not any(spec.transfer or spec.hangup for spec in intent.actions):
            # Call routing: a department that lists this intent takes the caller.
            departments = self.ctx.bot.departments.items()
            owner = next((name for name, d in departments if intent.name in d.intents), None)
            if owner is not None:
                if not reply:
                    yield TextDelta(phrases.handoff)  # a transfer is never silent
                yield DialogueAction(
                    kind="transfer", department=owner, reason={**reason, "routed_by": "department"}
                )

    def heard(self, said: str, heard: str) -> None:
        """A script keeps no model context; remember what was really heard for repeats."""
        self.last_reply = heard

    def retract(self) -> None:
        """The last turn comes again whole: undo what it did to the miss count and the last reply."""
        self.understanding, self.last_reply, self.pending = self._before_last
