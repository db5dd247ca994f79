"""Multilingual calls, stage by stage: the bot's language config, the call's detection and pinning,
the policy rule, replies and the LLM prompt in the caller's language, and interpretation for agents."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
import yaml

from agent.call.interpretation import interpret
from agent.call.language import CallLanguage
from agent.config.bot import BotConfig
from agent.config.checks import reference_problems
from agent.dashboard.pages import call_page
from agent.dialogue.base import CallContext, LanguageChoice, TextDelta
from agent.dialogue.llm_context import system_prompt
from agent.dialogue.scripted import IntentMatcher, ScriptedDialogue
from agent.escalation.rules import LANGUAGE_RULE, RuleState, compile_rules
from agent.escalation.signals import SignalTracker
from pipelines.asr import Transcript
from testkit.llm_server import FakeLlmServer
from tests.agent.conftest import REPO

SPANISH_PHRASES = yaml.safe_load((REPO / "prompts" / "international_desk.yaml").read_text())["languages"][
    "phrases"
]["es"]


def desk(**languages: Any) -> BotConfig:
    """The shipped international desk, with `languages` changed."""
    data = yaml.safe_load((REPO / "prompts" / "international_desk.yaml").read_text())
    data["languages"].update(languages)
    return BotConfig.model_validate(data)


class PinnedTo:
    """A transcriber stand-in that remembers the language it was pinned to."""

    sample_rate_in = 8000

    def __init__(self, language: str | None = "en") -> None:
        self.language = language

    def for_language(self, language: str | None) -> PinnedTo:
        return PinnedTo(language)


def heard(*scores: tuple[str, float]) -> Transcript:
    return Transcript("words", scores[0][0], scores[0][1], language_scores=scores)


def call_language(bot: BotConfig) -> CallLanguage:
    return CallLanguage(bot, PinnedTo(), LanguageChoice())  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- config


def test_the_shipped_desk_detects_and_sends_languages_without_a_voice_to_interpreters() -> None:
    bot = desk()
    assert reference_problems(bot) == []
    assert bot.languages.detect and bot.asr_model == "base" and bot.languages.voices == {}
    assert [a.transfer for a in bot.languages.unsupported] == ["interpreters"]


def test_a_voice_needs_every_phrase_and_reply_in_its_language() -> None:
    bot = desk(voices={"es": "/srv/voices/es.onnx"}, phrases={"es": {"hold": "Un momento."}})
    problems = dict(reference_problems(bot))
    assert "missing phrases: handoff" in problems[("languages", "phrases", "es")]
    fixed = desk(voices={"es": "/srv/voices/es.onnx"}, phrases={"es": SPANISH_PHRASES})
    assert reference_problems(fixed) == []  # both intents have their Spanish reply


def test_detection_needs_a_multilingual_model() -> None:
    data = yaml.safe_load((REPO / "prompts" / "international_desk.yaml").read_text())
    data["asr_model"] = "tiny.en"
    problems = dict(reference_problems(BotConfig.model_validate(data)))
    assert "multilingual" in problems[("languages", "detect")]


def test_unknown_phrase_names_and_language_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="no phrase named helo"):
        desk(phrases={"es": {"helo": "Hola"}})
    with pytest.raises(ValueError, match="not a language code"):
        desk(voices={"Spanish": "/srv/es.onnx"})


# ----------------------------------------------------------------------------- detection


def test_a_confident_first_turn_pins_the_language() -> None:
    language = call_language(desk())
    assert language.current.language is None  # detecting
    found = language.observe(heard(("es", 0.8), ("it", 0.1)))
    assert found is not None and found.language == "es" and found.turns == 1 and found.confident
    assert not found.supported  # no Spanish voice: the bot keeps answering in English
    assert language.current.language == "es"  # later turns are transcribed in Spanish
    assert (language.choice.caller, language.choice.reply) == ("es", "en")
    assert language.observe(heard(("pt", 0.9))) is None  # pinned: no flipping mid-call


def test_unsure_turns_are_averaged_and_pinned_after_detect_turns() -> None:
    language = call_language(desk(min_probability=0.6))
    assert language.observe(heard(("pt", 0.35), ("es", 0.3))) is None  # unsure: go on detecting
    found = language.observe(heard(("es", 0.5), ("pt", 0.2)))
    assert found is not None and found.language == "es" and found.turns == 2
    assert found.probability == pytest.approx(0.4) and not found.confident  # the best guess


def test_a_language_with_a_voice_is_answered_in_it_with_its_fixed_lines() -> None:
    bot = desk(voices={"es": "/srv/voices/es.onnx"}, phrases={"es": SPANISH_PHRASES})
    language = call_language(bot)
    found = language.observe(heard(("es", 0.7)))
    assert found is not None and found.supported and language.choice.reply == "es"
    assert language.fixed_line(bot.phrases.handoff) == (SPANISH_PHRASES["handoff"], "es")
    rule_line = "Of course. Let me connect you with a colleague."  # a rule's own line: not translated
    assert language.fixed_line(rule_line) == (rule_line, "en")


def test_a_bot_that_does_not_detect_never_changes_language() -> None:
    data = yaml.safe_load((REPO / "prompts" / "support_desk.yaml").read_text())
    language = call_language(BotConfig.model_validate(data))
    assert language.pinned and language.observe(heard(("es", 1.0))) is None
    assert language.choice.reply == "en"


def test_the_policy_is_a_rule_that_sees_the_language_signals() -> None:
    bot = desk()
    state = RuleState(compile_rules(bot))
    signals = SignalTracker(IntentMatcher(bot.intents))
    signals.caller_turn("Por el momento usted es la única persona en la conferencia.")
    assert state.check(signals.snapshot()) is None  # not detected yet: language_supported is None
    signals.language, signals.language_probability, signals.language_supported = "es", 0.8, False
    firing = state.check(signals.snapshot())
    assert firing is not None and firing.rule == LANGUAGE_RULE and firing.terminal
    assert firing.signals == {"language_supported": False}
    assert [a.transfer for a in firing.actions] == ["interpreters"]


def test_without_an_unsupported_policy_the_bot_says_so_and_answers_in_english() -> None:
    bot = desk(unsupported=[])
    (rule,) = [c.rule for c in compile_rules(bot) if c.rule.name == LANGUAGE_RULE]
    assert [a.say for a in rule.then] == [bot.phrases.language_notice]
    assert bot.phrases.language_notice in bot.fixed_phrases()  # cached: plays at once


# ----------------------------------------------------------------------------- replies


async def test_the_script_answers_in_the_callers_language() -> None:
    bot = desk(voices={"es": "/srv/voices/es.onnx"}, phrases={"es": SPANISH_PHRASES})
    ctx = CallContext("c_1", "international_desk", bot, "919876543210", "918040003000")
    ctx.language.caller = ctx.language.reply = "es"
    dialogue = ScriptedDialogue(ctx)
    said = [i.text async for i in dialogue.reply("¿Cuál es su horario?") if isinstance(i, TextDelta)]
    assert said == [bot.intents[0].replies["es"]]
    said = [i.text async for i in dialogue.reply("blah blah") if isinstance(i, TextDelta)]
    assert said == [SPANISH_PHRASES["rephrase"]]


def test_the_llm_is_told_the_callers_language() -> None:
    ctx = CallContext("c_1", "international_desk", desk(), "919876543210", "918040003000")
    assert "speaks" not in system_prompt(ctx)  # nothing detected: the prompt is as before
    ctx.language.caller, ctx.language.reply = "es", "es"
    assert "The caller speaks Spanish: answer in Spanish only." in system_prompt(ctx)
    ctx.language.reply = "en"  # no Spanish voice
    assert "The caller speaks Spanish, but this line can only answer in English" in system_prompt(ctx)


# ----------------------------------------------------------------------------- interpretation


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLlmServer]:
    with FakeLlmServer() as server:
        server.on(
            r"^Translate into English from Spanish: .*única persona",
            reply="At the moment, you are the only person in the conference.",
        )
        yield server


async def test_a_caller_turn_is_interpreted_through_the_openai_sdk(llm: FakeLlmServer) -> None:
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0)
    try:
        said = "Por el momento usted es la única persona en la conferencia."
        found = await interpret(client, "test-model", said, "es", "en")
    finally:
        await client.close()
    assert found.text == "At the moment, you are the only person in the conference."
    assert found.as_dict()["from"] == "es" and found.unavailable is None
    request = llm.requests[-1]
    assert request["temperature"] == 0 and not request.get("stream")
    assert "into English" in request["messages"][0]["content"]


async def test_without_an_llm_no_interpretation_is_made_up() -> None:
    found = await interpret(None, "m", "Hola", "es", "en")
    assert found.text is None and found.as_dict() == {
        "from": "es",
        "to": "en",
        "text": None,
        "ms": 0,
        "unavailable": "no_llm",
    }


async def test_a_failing_llm_says_why_there_is_no_interpretation(llm: FakeLlmServer) -> None:
    llm.fail("500", times=1)
    client = openai.AsyncOpenAI(base_url=llm.base_url, api_key="unused", max_retries=0)
    try:
        found = await interpret(client, "test-model", "Hola", "es", "en")
    finally:
        await client.close()
    assert found.text is None and found.unavailable == "http_500"


def test_the_past_call_page_shows_the_interpretation_beside_the_original() -> None:
    record = {
        "call_id": "c_1",
        "meta": {"language": "es"},
        "turns": [
            {
                "role": "caller",
                "text": "Hola",
                "translation": {"from": "es", "to": "en", "text": "Hello <b>"},
            },
            {
                "role": "caller",
                "text": "Adiós",
                "translation": {"from": "es", "to": "en", "text": None, "unavailable": "no_llm"},
            },
        ],
    }
    html = call_page(record, live=True, departments=[], user="sup", csrf="x", flash="")
    assert "Hola" in html and "[es → en] Hello &lt;b&gt;" in html
    assert "no interpretation available (no_llm)" in html and "<dd>es</dd>" in html
