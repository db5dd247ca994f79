"""The LLM's reading of a caller turn's intent, for turns the bot's YAML did not recognise.

One short, non-streamed chat completion (temperature 0, a few tokens) naming one intent from a closed
list: the bot's YAML intents (described by their examples) and the built-ins. Anything else in the
answer counts as no intent. It runs beside the reply (see `CallerTurns`), so it costs the caller no
time; it is bounded by its own timeout and its failures only cost the signal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import openai

from agent.config.bot import BotConfig
from agent.dialogue.llm_once import ask_once

BUILTIN_DESCRIPTIONS = {
    "asked_for_human": "wants to talk to a person, an agent, a human",
    "cancel": "wants to cancel a service or close an account",
    "complaint": "complains about the service or wants to make a complaint",
}
NO_INTENT = "none"
PROMPT_PREFIX = "Caller said: "
"""The user message starts with this (test servers key their rules on it)."""


@dataclass(frozen=True)
class Classification:
    """What the LLM said: an intent of the list, or None; `error` when it could not be asked."""

    intent: str | None
    ms: int
    error: str | None = None


def intent_labels(bot: BotConfig) -> dict[str, str]:
    """Intent name → a short description, for the prompt."""
    labels: dict[str, str] = {}
    for intent in bot.intents:
        said = intent.examples[:3] or intent.keywords[:5] or intent.patterns[:2]
        labels[intent.name] = "e.g. " + "; ".join(f'"{s}"' for s in said)
    for name, description in BUILTIN_DESCRIPTIONS.items():
        labels.setdefault(name, description)
    return labels


def messages(text: str, labels: dict[str, str]) -> list[dict[str, str]]:
    """The chat messages that ask for the intent of `text`."""
    listed = "\n".join(f"- {name}: {description}" for name, description in labels.items())
    system = (
        "You label what a phone caller wants. Answer with exactly one intent name from the list, "
        f"or {NO_INTENT} if none fits. No other words.\nIntents:\n{listed}"
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"{PROMPT_PREFIX}{text}\nIntent:"},
    ]


def parse_answer(answer: str, names: list[str]) -> str | None:
    """The intent name in the model's answer, if it is one of `names` (case and punctuation aside)."""
    words: list[str] = re.findall(r"[a-z][a-z0-9_]*", answer.lower())
    for word in words[:3]:
        if word in names:
            return word
    return None


async def classify(
    client: openai.AsyncOpenAI, model: str, text: str, labels: dict[str, str], timeout_s: float
) -> Classification:
    """Ask the LLM for the intent of one caller turn."""
    answer = await ask_once(client, model, messages(text, labels), max_tokens=8, timeout_s=timeout_s)
    if answer.error is not None:
        return Classification(None, answer.ms, answer.error)
    return Classification(parse_answer(answer.text, list(labels)), answer.ms)
