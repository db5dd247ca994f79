"""What a bot says, in which languages: its fixed phrases, and the languages it serves (prompts/<bot>.yaml
`phrases` and `languages`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from agent.config.actions import ActionSpec
from agent.config.base import Strict

__all__ = ["LANGUAGE", "TRANSLATED_PHRASES", "Languages", "Phrases"]


class Phrases(Strict):
    """Fixed lines, synthesized once at start-up so they play without delay."""

    hold: str = "One moment, please."
    handoff: str = "Let me connect you with a colleague who can help. Please stay on the line."
    fallback: str = "Sorry, I'm having trouble on my side. Let me get a person to help you."
    rephrase: str = "Sorry, I didn't quite get that. Could you say it another way?"
    goodbye: str = "Thank you for calling. Goodbye!"
    filler: str = "Let me check that for you."
    still_there: str = "Are you still there?"
    unanswered: str = "Sorry, nobody is free to take your call right now. Please call again later. Goodbye."
    language_notice: str = "Sorry, I can only help you in English. Let's go on in English."
    """Said once (bots that detect the caller's language) when the caller's language has no voice."""

    def all(self) -> list[str]:
        """Every phrase, for the phrase cache."""
        return [
            self.hold,
            self.handoff,
            self.fallback,
            self.rephrase,
            self.goodbye,
            self.filler,
            self.still_there,
            self.unanswered,
        ]


TRANSLATED_PHRASES = tuple(name for name in Phrases.model_fields if name != "language_notice")
"""The phrases a language with a voice gives in that language (the notice is for those without one)."""
LANGUAGE = r"^[a-z]{2,3}$"
"""A Whisper language code: en, es, fr, hi, haw…"""


class Languages(Strict):
    """Which languages the bot speaks, how it finds the caller's, and what it does with the others.

    With `detect`, the first caller turns are transcribed in whatever language they are in; once the
    detection is sure enough (probability averaged over the turns so far), or after `detect_turns`
    turns, the caller's language is pinned: later turns are transcribed in it, and the rules see it as
    the signals `language`, `language_probability` and `language_supported`. The bot answers in the
    caller's language when `voices` has one for it, else in its own language (`unsupported` says how).
    """

    detect: bool = Field(
        default=False, description="Detect the caller's language; needs a multilingual asr_model (base)."
    )
    detect_turns: int = Field(default=2, ge=1, le=5, description="Caller turns to detect on, at most.")
    min_probability: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="Pin the language as soon as its probability, averaged over the turns so far, "
        "reaches this. Whisper base gives real 8 kHz Spanish 0.45-0.6, English 0.98 (make bench).",
    )
    candidates: list[str] = Field(
        default_factory=list,
        description="Detect among these languages only (those your callers speak); empty: any of Whisper's.",
    )
    voices: dict[str, str] = Field(
        default_factory=dict,
        description="Language → piper voice (packaged name or .onnx path) the bot answers that language "
        "in. The bot's own `language` uses `voice`.",
    )
    phrases: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Language → the fixed phrases in it (every key of `phrases`), for each voice.",
    )
    unsupported: list[ActionSpec] = Field(
        default_factory=list,
        description="What happens when the caller's language has no voice, e.g. [{transfer: interpreters}]. "
        "Empty: the bot says `phrases.language_notice` once and answers in its own language.",
    )

    @field_validator("candidates")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.match(LANGUAGE, code):
                raise ValueError(f"{code!r} is not a language code (en, es, fr…)")
        return value

    @field_validator("voices", "phrases")
    @classmethod
    def _keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for code in value:
            if not re.match(LANGUAGE, code):
                raise ValueError(f"{code!r} is not a language code (en, es, fr…)")
        return value

    @field_validator("phrases")
    @classmethod
    def _phrase_names(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for code, lines in value.items():
            unknown = sorted(set(lines) - set(TRANSLATED_PHRASES))
            if unknown:
                raise ValueError(
                    f"{code}: no phrase named {', '.join(unknown)} (phrases: {', '.join(TRANSLATED_PHRASES)})"
                )
        return value
