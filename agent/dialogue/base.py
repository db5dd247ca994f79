"""The Dialogue interface: caller text in, a stream of reply text and actions out.

A reply is consumed as an async iterator, one task per reply, so barge-in is just cancelling that task.
After a reply the session tells the dialogue what the caller actually heard, so the context never
claims the bot said words it was cut off before saying.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.config.actions import ActionSpec
from agent.config.bot import BotConfig

ActionKind = Literal["say", "transfer", "tool", "notify", "tag", "hold_music", "hangup"]


@dataclass
class LanguageChoice:
    """The caller's language as the call knows it, and the language the bot answers in (the caller's
    when the bot has a voice for it, else its own). Empty until the call starts: the bot's language."""

    caller: str = ""
    reply: str = ""


@dataclass(frozen=True)
class CallContext:
    """What a dialogue may know about the call."""

    call_id: str
    bot_name: str
    bot: BotConfig
    caller_number: str
    called_number: str
    started_at: float = field(default_factory=time.time)
    language: LanguageChoice = field(default_factory=LanguageChoice)
    """Changes once the caller's language is detected (agent.call.language)."""

    @property
    def reply_language(self) -> str:
        """The language the bot answers in now."""
        return self.language.reply or self.bot.language

    @property
    def caller_language(self) -> str:
        """The caller's language as far as the call knows (the bot's until detected)."""
        return self.language.caller or self.bot.language

    def variables(self) -> dict[str, Any]:
        """Template variables for replies and prompts."""
        return {
            "caller_number": self.caller_number,
            "called_number": self.called_number,
            "bot_name": self.bot.name,
            "time": time.strftime("%H:%M", time.localtime()),
            "date": time.strftime("%Y-%m-%d", time.localtime()),
            "departments": ", ".join(self.bot.departments),
            "department_descriptions": "; ".join(
                f"{name}: {dept.description}" if dept.description else name
                for name, dept in self.bot.departments.items()
            ),
        }


@dataclass(frozen=True)
class DialogueAction:
    """Something the dialogue wants done on the call, with why."""

    kind: ActionKind
    department: str | None = None
    tool: str | None = None
    args: dict[str, Any] | None = None
    text: str | None = None
    webhook: str | None = None
    tags: tuple[str, ...] = ()
    reason: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: ActionSpec, reason: dict[str, Any]) -> DialogueAction:
        """From a YAML action entry."""
        return cls(
            kind=spec.kind,  # type: ignore[arg-type]
            department=spec.transfer,
            tool=spec.tool,
            args=spec.args,
            text=spec.say,
            webhook=spec.notify,
            tags=tuple(spec.tag or ()),
            reason=reason,
        )


@dataclass(frozen=True)
class TextDelta:
    """A piece of reply text, in order; clauses are cut downstream."""

    text: str


@dataclass
class Understanding:
    """How the dialogue read the caller's last turn (a signal for escalation)."""

    intent: str | None = None
    confidence: float = 0.0
    misunderstood: bool = False
    misunderstood_in_a_row: int = 0


ReplyItem = TextDelta | DialogueAction


class DialogueFailure(Exception):
    """A reply could not be produced, or not finished; the session says the fallback line.

    `reason` is short and stable, for records and metrics: unreachable, http_<status>,
    first_token_timeout, stream_broken, timeout, tool_rounds.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Dialogue(Protocol):
    """One per call."""

    understanding: Understanding

    def reply(self, caller_text: str) -> AsyncIterator[ReplyItem]:
        """Stream the reply to the caller's final text; may be cancelled at any point."""
        ...

    def heard(self, said: str, heard: str) -> None:
        """The bot's last reply `said` was cut off; the caller heard only `heard`."""
        ...

    def retract(self) -> None:
        """Forget the last caller turn and the reply to it: the caller had not finished, and the whole
        turn comes again as one (semantic endpointing ended it too early)."""
        ...
