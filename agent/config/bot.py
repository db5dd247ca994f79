"""One bot = one prompts/<bot>.yaml: what it says, whom it hands callers to, what it may do.

Operators edit these files; models forbid unknown keys, and `agent.config.checks` cross-checks names
(departments, tools, intents) so `hotline check` points at the exact key of a mistake.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import Field, field_validator, model_validator

from agent.config.actions import ActionSpec, Webhook
from agent.config.base import NAME, Strict, normalize_number
from agent.config.phrases import LANGUAGE, Languages, Phrases
from pipelines.turns import TurnConfig


class StreamOptions(Strict):
    """The PCMO `stream` action for this bot's calls."""

    listen_mode: Literal["caller", "callee", "both"] = "caller"
    voice_quality: Literal[8000, 16000] = 8000
    stream_on_answer: bool = True
    record: bool = Field(default=False, description="Put a PIOPIY `record` action before the stream.")

    @field_validator("voice_quality", mode="before")
    @classmethod
    def _rate(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.isdigit() else value


class TurnTaking(Strict):
    """When a caller turn starts and ends, and when the caller may cut the bot off."""

    start_ms: int = Field(default=160, ge=40, le=1000, description="Speech needed to start a turn.")
    end_silence_ms: int = Field(
        default=600,
        ge=300,
        le=3000,
        description="Silence that ends a turn. 600: no false splits of multi-clause prompts in `make bench` "
        "(450: 3 %, 400: 9 %), and no latency to gain below it while ASR is the bottleneck.",
    )
    barge_in_ms: int = Field(default=200, ge=60, le=2000, description="Speech over the bot that cuts it.")
    speculative_asr: bool = Field(
        default=True, description="Transcribe at short pauses so the text is ready when the turn ends."
    )
    pause_ms: int = Field(
        default=160, ge=60, le=1000, description="A pause this long starts a speculative transcription."
    )
    silence_timeout_s: float = Field(
        default=8.0,
        ge=2.0,
        le=120.0,
        description="The caller saying nothing this long after the bot finished is a silence timeout: "
        "a signal for the rules; without a rule that acts on it, the bot asks if they are still there.",
    )
    semantic_endpoint: bool = Field(
        default=True,
        description="End the turn at a pause as soon as its speculative text reads as a whole sentence, "
        "instead of waiting for end_silence_ms. If the caller goes on within end_silence_ms, the bot "
        "stops and both parts make one turn.",
    )

    @model_validator(mode="after")
    def _pause_before_end(self) -> TurnTaking:
        if self.pause_ms >= self.end_silence_ms:
            raise ValueError(
                f"pause_ms ({self.pause_ms}) must be shorter than end_silence_ms ({self.end_silence_ms})"
            )
        return self

    def turn_config(self) -> TurnConfig:
        """The pipeline's turn detector settings for these timings."""
        return TurnConfig(
            start_ms=self.start_ms,
            end_silence_ms=self.end_silence_ms,
            barge_in_ms=self.barge_in_ms,
            pause_ms=self.pause_ms,
            tail_ms=min(TurnConfig.tail_ms, self.pause_ms),
        )


class Department(Strict):
    """Humans a call can be handed to."""

    description: str = ""
    numbers: list[str] = Field(min_length=1)
    ring_type: Literal["group"] | None = None
    timeout: int = Field(default=40, ge=5, le=300, description="Seconds each number rings.")
    loop: int = Field(default=1, ge=1, le=10)
    intents: list[str] = Field(default_factory=list, description="Caller intents routed here.")
    if_unanswered: list[ActionSpec] = Field(
        default_factory=list,
        description="When nobody answers the transfer (or it fails): e.g. transfer to another department, "
        "or say a line and hang up. Default: the `unanswered` phrase, then hang up.",
    )

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        return [normalize_number(v) for v in value] if isinstance(value, list) else value


class Intent(Strict):
    """Something a caller may want, how to recognise it, and the scripted answer."""

    name: str = Field(pattern=NAME)
    examples: list[str] = Field(default_factory=list)
    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list, description="Regular expressions, case-insensitive.")
    reply: str | None = None
    replies: dict[str, str] = Field(
        default_factory=dict,
        description="The reply in other languages the bot speaks (language code → text), e.g. {es: ...}.",
    )
    actions: list[ActionSpec] = Field(default_factory=list)
    ask: str | None = Field(
        default=None,
        description="Said when a tool argument of this intent comes out empty (e.g. no order number was "
        "heard); the caller's next turn completes the intent.",
    )

    @field_validator("patterns")
    @classmethod
    def _compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except (re.error, OverflowError, RecursionError) as exc:  # 'a{9999999999}', '((((…'
                raise ValueError(f"bad regular expression {pattern!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _recognisable(self) -> Intent:
        if not (self.examples or self.keywords or self.patterns):
            raise ValueError("an intent needs examples, keywords or patterns to be recognised")
        return self


class HttpTool(Strict):
    """An HTTP backend the bot may query (order status, balance...), offered to the LLM and the script."""

    name: str = Field(pattern=NAME)
    description: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    method: Literal["GET", "POST"] = "GET"
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Values may name env vars as {env.NAME}; secrets stay out of YAML."
    )
    timeout_s: float = Field(default=4.0, gt=0, le=30)
    result: str = Field(description="How to say the result, e.g. 'Order {order_id} is {status}.'")
    filler: str | None = Field(default=None, description="Said when the tool takes longer than a second.")

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError("parameters must be a JSON schema with type: object")
        try:
            Draft202012Validator.check_schema(value)
        except SchemaError as exc:
            raise ValueError(f"parameters is not a valid JSON schema: {exc.message}") from None
        except (OverflowError, RecursionError) as exc:  # from its "pattern" regexes
            raise ValueError(f"parameters is not a valid JSON schema: {exc}") from None
        return value


Condition = str | dict[str, Any]


class Rule(Strict):
    """An escalation rule: when the signals say so, do these actions."""

    name: str = Field(pattern=NAME)
    when: Condition
    then: list[ActionSpec] = Field(min_length=1)
    priority: int = 0
    once: bool = False
    cooldown_s: float | None = Field(default=None, ge=0)

    @field_validator("when")
    @classmethod
    def _shape(cls, value: Condition) -> Condition:
        _check_condition(value)
        return value


def _check_condition(value: Any) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("an empty condition")
        return
    if isinstance(value, dict) and len(value) == 1:
        ((op, arg),) = value.items()
        if op in ("all", "any") and isinstance(arg, list) and arg:
            for item in arg:
                _check_condition(item)
            return
        if op == "not":
            _check_condition(arg)
            return
    raise ValueError("a condition is a string like 'turns >= 3', or {all: [...]}, {any: [...]}, {not: ...}")


class LlmIntents(Strict):
    """With an LLM endpoint configured, let the LLM name the intent of turns the YAML did not recognise.

    The classification runs beside the answer (no added latency); when it names an intent, the turn's
    signals are updated and the rules are checked again (trigger `llm_intent`).
    """

    enabled: bool = False
    timeout_s: float = Field(default=2.0, gt=0, le=10, description="Give up on the classification after.")


class Escalation(Strict):
    """Escalation rules, checked on every caller turn and on every dialogue failure."""

    rules: list[Rule] = Field(default_factory=list)
    failure_department: str | None = Field(
        default=None,
        description="Where a caller goes when the dialogue fails and no rule says otherwise "
        "(default: the first department).",
    )
    llm_intents: LlmIntents = Field(default_factory=LlmIntents)


class BotConfig(Strict):
    """prompts/<bot>.yaml."""

    name: str = Field(min_length=1, description="How the bot introduces the company or desk.")
    language: str = Field(
        default="en", pattern=LANGUAGE, description="The bot's own language, and its human agents'."
    )
    languages: Languages = Field(default_factory=Languages)
    voice: str = Field(
        default="en_US-joe-medium", description="Packaged piper voice or a path to an .onnx file."
    )
    asr_model: str = Field(
        default="tiny.en", description="tiny.en, base, or a faster-whisper model directory."
    )
    asr_window_s: float = Field(
        default=20.0,
        ge=16.0,
        le=30.0,
        description="Whisper encoder window for turns that fit: 20 s decodes in less than half the time of "
        "Whisper's 30 s with the same words (make bench); shorter windows lose accuracy.",
    )
    greeting: str = Field(min_length=1)
    hold_music: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="An .mp3/.wav URL PIOPIY plays as hold music; without it, holding says the hold line.",
    )
    persona: str = Field(default="", description="System prompt for the LLM.")
    stream: StreamOptions = Field(default_factory=StreamOptions)
    phrases: Phrases = Field(default_factory=Phrases)
    turn_taking: TurnTaking = Field(default_factory=TurnTaking)
    departments: dict[str, Department] = Field(default_factory=dict)
    intents: list[Intent] = Field(default_factory=list)
    tools: list[HttpTool] = Field(default_factory=list)
    webhooks: dict[str, Webhook] = Field(
        default_factory=dict, description="Named webhooks that `notify` actions POST to."
    )
    escalation: Escalation = Field(default_factory=Escalation)
    max_misunderstood: int = Field(default=2, ge=1, le=10)

    def phrases_in(self, language: str) -> Phrases:
        """The fixed phrases in one of the bot's languages (its own: `phrases`)."""
        lines = self.languages.phrases.get(language)
        return self.phrases.model_copy(update=lines) if lines and language != self.language else self.phrases

    def language_phrases(self, language: str) -> list[str]:
        """The lines worth synthesizing at start-up in another language's voice (see `fixed_phrases`)."""
        static = [i.replies[language] for i in self.intents if "{" not in i.replies.get(language, "{")]
        return list(dict.fromkeys([*self.phrases_in(language).all(), *static]))

    def fixed_phrases(self) -> list[str]:
        """Lines worth synthesizing at start-up: greeting, fixed phrases, and script replies with no
        template variables (they never change, so they play without synthesis delay)."""
        static = [i.reply for i in self.intents if i.reply and "{" not in i.reply]
        static += [t.filler for t in self.tools if t.filler]
        rules = [a.say for r in self.escalation.rules for a in r.then if a.say and "{" not in a.say]
        notice = (
            [self.phrases.language_notice] if self.languages.detect and not self.languages.unsupported else []
        )
        return list(dict.fromkeys([self.greeting, *self.phrases.all(), *static, *rules, *notice]))
