"""Live interpretation for the humans: after a handoff, what the caller says is translated into the
agents' language (the bot's `language`) for the supervisor's live view and the record.

One short, non-streamed chat completion per caller turn (temperature 0) on the configured LLM
endpoint; the original stays beside it. Without an LLM endpoint, or when the request fails, the turn
says that no interpretation was available and why: never a made-up translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from agent.dialogue.languages import language_name
from agent.dialogue.llm_once import ask_once

PROMPT_PREFIX = "Translate into "
"""The user message starts with this (test servers key their rules on it)."""
TIMEOUT_S = 6.0


@dataclass(frozen=True)
class Interpretation:
    """A caller turn in the agents' language, or why there is none."""

    source: str
    target: str
    text: str | None
    ms: int = 0
    unavailable: str | None = None
    """Why there is no translation: no_llm, timeout, http_<status>, empty…"""

    def as_dict(self) -> dict[str, Any]:
        """For the record's turn and the live `turn` event."""
        out: dict[str, Any] = {"from": self.source, "to": self.target, "text": self.text, "ms": self.ms}
        if self.unavailable is not None:
            out["unavailable"] = self.unavailable
        return out


def messages(text: str, source: str, target: str) -> list[dict[str, str]]:
    """The chat messages asking for the translation of one caller turn."""
    system = (
        "You interpret a phone call for a call-centre agent. Translate what the caller said into "
        f"{language_name(target)}, faithfully and plainly, keeping numbers and names as said. "
        "Answer with the translation only."
    )
    user = f"{PROMPT_PREFIX}{language_name(target)} from {language_name(source)}: {text}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


async def interpret(
    client: openai.AsyncOpenAI | None,
    model: str,
    text: str,
    source: str,
    target: str,
    timeout_s: float = TIMEOUT_S,
) -> Interpretation:
    """Translate one caller turn from `source` into `target` (language codes)."""
    if client is None:
        return Interpretation(source, target, None, unavailable="no_llm")
    answer = await ask_once(
        client, model, messages(text, source, target), max_tokens=max(64, len(text)), timeout_s=timeout_s
    )
    if answer.error is not None:
        return Interpretation(source, target, None, answer.ms, answer.error)
    return Interpretation(source, target, answer.text or None, answer.ms, None if answer.text else "empty")
