"""The caller's language on one call: detected on the first turns, pinned, and answered in.

A bot with `languages.detect` transcribes its first caller turns without a language: Whisper (the
multilingual `base`) detects each turn's language on the encoder pass the decode uses anyway. The
turns' language probabilities are averaged; as soon as the likeliest language reaches
`min_probability`, or after `detect_turns` turns, the language is pinned and later turns are
transcribed in it (no more flipping between Spanish and Portuguese mid-call). The bot then answers in
it when it has a voice for it; otherwise the `language_unsupported` rule applies the bot's policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.config.bot import BotConfig
from agent.config.phrases import TRANSLATED_PHRASES
from agent.dialogue.base import LanguageChoice
from agent.worker.speech_models import CallTranscriber
from pipelines.asr import Transcript


@dataclass(frozen=True)
class Detection:
    """The caller's language, as pinned."""

    language: str
    probability: float
    """Its probability averaged over the detection turns."""
    turns: int
    """Caller turns it took."""
    confident: bool
    """It reached `min_probability` (False: the best guess after `detect_turns` turns)."""
    supported: bool
    """The bot has a voice for it."""
    scores: dict[str, float]
    """The likeliest languages, averaged."""

    def as_dict(self) -> dict[str, Any]:
        """For the record and live events."""
        return {
            "language": self.language,
            "probability": self.probability,
            "turns": self.turns,
            "confident": self.confident,
            "supported": self.supported,
            "scores": self.scores,
        }


class CallLanguage:
    """One call's language state; also the call's speech-to-text (it transcribes in the pinned language).

    `choice` is shared with the dialogue's `CallContext`: it says which language the bot answers in.
    """

    def __init__(self, bot: BotConfig, transcriber: CallTranscriber, choice: LanguageChoice) -> None:
        self.bot = bot
        self.detecting = bot.languages.detect
        self._transcriber = transcriber
        self.current = transcriber.for_language(None) if self.detecting else transcriber
        self.choice = choice
        choice.caller = choice.reply = bot.language
        self.detection: Detection | None = None
        self._evidence: list[dict[str, float]] = []

    @property
    def sample_rate_in(self) -> int:
        """The call rate."""
        return self.current.sample_rate_in

    async def transcribe(self, pcm: bytes) -> Transcript:
        """One turn, detecting its language until the call's language is pinned, then in that one."""
        return await self.current.transcribe(pcm)

    @property
    def pinned(self) -> bool:
        """Later turns are transcribed in one language (always, for a bot that does not detect)."""
        return not self.detecting or self.detection is not None

    def supports(self, language: str) -> bool:
        """The bot answers in `language`: its own, or one with a voice."""
        return language == self.bot.language or language in self.bot.languages.voices

    def observe(self, transcript: Transcript) -> Detection | None:
        """An accepted caller turn: its language evidence counts; returns the detection when it pins."""
        if self.pinned or not transcript.language_scores:
            return None
        self._evidence.append(dict(transcript.language_scores))
        turns = len(self._evidence)
        languages = {lang for scores in self._evidence for lang in scores}
        averaged = {lang: sum(s.get(lang, 0.0) for s in self._evidence) / turns for lang in languages}
        ranked = sorted(averaged.items(), key=lambda kv: -kv[1])
        language, probability = ranked[0]
        confident = probability >= self.bot.languages.min_probability
        if not confident and turns < self.bot.languages.detect_turns:
            return None
        supported = self.supports(language)
        self.detection = Detection(
            language=language,
            probability=round(probability, 3),
            turns=turns,
            confident=confident,
            supported=supported,
            scores={lang: round(p, 3) for lang, p in ranked[:3]},
        )
        self.current = self._transcriber.for_language(language)
        self.choice.caller = language
        self.choice.reply = language if supported else self.bot.language
        return self.detection

    def fixed_line(self, text: str) -> tuple[str, str]:
        """A fixed line to say now, in the language the bot answers in when it has the line in it:
        (text, language of the voice to say it with). Lines with no translation (a rule's `say`) keep
        the bot's own language and voice."""
        reply = self.choice.reply
        if reply == self.bot.language:
            return text, reply
        own, theirs = self.bot.phrases, self.bot.phrases_in(reply)
        for name in TRANSLATED_PHRASES:
            if getattr(own, name) == text:
                return getattr(theirs, name), reply
        if text in self.bot.language_phrases(reply):
            return text, reply
        return text, self.bot.language

    def turn_language(self, transcript: Transcript) -> str:
        """The language a caller turn was in: the pinned one, else what Whisper heard in it."""
        if self.pinned:
            return self.choice.caller
        return transcript.language or self.bot.language
