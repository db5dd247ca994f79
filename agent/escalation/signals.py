"""Signals: what every caller turn (and every failure) says about how the call is going.

Per caller turn: sentiment (VADER compound, with phone-speech tweaks), its rolling mean over the last
`window` turns and trend (last minus first of the window), frustration cues, a repeated question, a
raised voice (turn level well above the caller's own earlier turns), the intent (the bot's YAML
intents, with built-in `asked_for_human`, `cancel` and `complaint` detectors), and whether the bot
understood. Counters: turns, misunderstood turns (in a row and in all), barge-ins, dialogue and tool
failures, silence timeouts; call duration; the caller's language (see `agent.call.language`).

Phone-speech tweaks to VADER: ASR writes no exclamation marks or capitals worth trusting, so those
boosts are stripped before scoring; "thanks"/"thank you" at the end of a complaint is politeness, not
joy, so a closing thanks is scored without it; a frustration cue ("this is ridiculous", "third
time", profanity) caps the turn's sentiment at -0.5.
"""

from __future__ import annotations

import re
import time
from collections import deque
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from agent.dialogue.scripted import IntentMatcher, normalize

BUILTIN_INTENTS: dict[str, re.Pattern[str]] = {
    "asked_for_human": re.compile(
        r"\b(?:(?:talk|speak|connect|transfer|put)\b.{0,30}\b(?:person|human|agent|someone|somebody|"
        r"representative|operator|manager|colleague|people)|real person|live agent|human being|"
        r"representative|operator)\b",
        re.IGNORECASE,
    ),
    "cancel": re.compile(r"\b(?:cancel|close my account|terminate)\b", re.IGNORECASE),
    "complaint": re.compile(
        r"\b(?:complain|complaint|unacceptable|disgrace|formal complaint)\b", re.IGNORECASE
    ),
}
FRUSTRATION = re.compile(
    r"\b(?:ridiculous|unbelievable|useless|waste of (?:my )?time|fed up|sick of|how many times|"
    r"(?:second|third|fourth) time|already told you|not listening|stupid|damn|hell|crap|bloody|"
    r"f\w*ck\w*|shit\w*|annoyed|angry|furious|frustrat\w*|terrible|awful|worst)\b",
    re.IGNORECASE,
)
COUNTERS = (
    "turns", "misunderstood", "misunderstood_in_a_row", "barge_ins", "dialogue_failures", "tool_failures",
    "silence_timeouts", "transfer_failures", "frustration_count",
)  # fmt: skip
_CLOSING_THANKS = re.compile(r"[,.]?\s*(?:thanks|thank you)[.!]?\s*$", re.IGNORECASE)


@dataclass
class TurnSignals:
    """What one caller turn said, kept with the turn in the record."""

    text: str
    intent: str | None
    intent_confidence: float
    understood: bool
    sentiment: float
    frustration: bool
    raised_voice: bool
    repeated_question: bool


@dataclass
class SignalTracker:
    """One call's signals (see the module docstring)."""

    matcher: IntentMatcher
    window: int = 3
    raised_voice_db: float = 8.0
    language: str = "en"
    language_probability: float | None = None  # None: not detected (yet, or the bot does not detect)
    language_supported: bool | None = None  # a voice speaks `language`; None: not decided yet
    started_at: float = field(default_factory=time.monotonic)
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    last: TurnSignals | None = None
    _sentiments: deque[float] = field(default_factory=lambda: deque(maxlen=3))
    _levels: list[float] = field(default_factory=list)
    _texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sentiments = deque(maxlen=self.window)

    def caller_turn(
        self, text: str, *, level_dbfs: float | None = None, understood: bool | None = None
    ) -> TurnSignals:
        """Score one final caller turn and update the counters."""
        intent, confidence = self.intent_of(text)
        ok = intent is not None if understood is None else understood
        frustrated = bool(FRUSTRATION.search(text))
        score = sentiment(text)
        if frustrated:
            score = min(score, -0.5)
        raised = (
            level_dbfs is not None
            and len(self._levels) >= 1
            and level_dbfs - sorted(self._levels)[len(self._levels) // 2] >= self.raised_voice_db
        )
        norm = normalize(text)
        repeated = len(norm.split()) >= 3 and any(
            SequenceMatcher(None, norm, earlier).ratio() >= 0.85 for earlier in self._texts
        )
        if level_dbfs is not None:
            self._levels.append(level_dbfs)
        self._texts.append(norm)
        self._sentiments.append(score)
        c = self.counters
        c["turns"] += 1
        c["frustration_count"] += frustrated
        if ok:
            c["misunderstood_in_a_row"] = 0
        else:
            c["misunderstood"] += 1
            c["misunderstood_in_a_row"] += 1
        self.last = TurnSignals(text, intent, confidence, ok, round(score, 3), frustrated, raised, repeated)
        return self.last

    def intent_of(self, text: str) -> tuple[str | None, float]:
        """The caller's intent: an explicit request for a person first, then the YAML intents, then the
        other built-ins."""
        if BUILTIN_INTENTS["asked_for_human"].search(text):
            return "asked_for_human", 1.0
        found = self.matcher.match(text)
        if found is not None:
            return found.intent.name, found.score
        for name, pattern in BUILTIN_INTENTS.items():
            if pattern.search(text):
                return name, 0.9
        return None, 0.0

    def set_intent(self, turn: TurnSignals, intent: str, confidence: float) -> bool:
        """A later reading of a turn's intent (the LLM's); False if a newer turn came meanwhile."""
        if turn is not self.last:
            return False
        turn.intent, turn.intent_confidence = intent, confidence
        return True

    def count(self, name: str) -> None:
        """One more of a counted event (barge_ins, dialogue_failures, tool_failures, silence_timeouts)."""
        self.counters[name] += 1

    def snapshot(self) -> dict[str, Any]:
        """Every signal by name, as rules see them."""
        last = self.last
        values = list(self._sentiments)
        out: dict[str, Any] = {
            **self.counters,
            "duration_s": round(time.monotonic() - self.started_at, 1),
            "language": self.language,
            "language_probability": self.language_probability,
            "language_supported": self.language_supported,
            "intent": last.intent if last else None,
            "intent_confidence": last.intent_confidence if last else 0.0,
            "asked_for_human": bool(last and last.intent == "asked_for_human"),
            "understood": last.understood if last else None,
            "sentiment": last.sentiment if last else None,
            "sentiment.rolling": round(sum(values) / len(values), 3) if values else None,
            "sentiment.trend": round(values[-1] - values[0], 3) if len(values) >= 2 else None,
            "frustration": last.frustration if last else False,
            "raised_voice": last.raised_voice if last else False,
            "repeated_question": last.repeated_question if last else False,
        }
        return out


_analyzer: SentimentIntensityAnalyzer | None = None


def sentiment(text: str) -> float:
    """VADER compound score of a transcript, with the phone-speech tweaks of the module docstring."""
    global _analyzer
    if _analyzer is None:
        _analyzer = SentimentIntensityAnalyzer()
    cleaned = text.replace("!", ".").lower()
    without_thanks = _CLOSING_THANKS.sub("", cleaned)
    if without_thanks.strip() and without_thanks != cleaned:
        base = _analyzer.polarity_scores(without_thanks)["compound"]
        if base < 0:
            return float(base)
    return float(_analyzer.polarity_scores(cleaned)["compound"])
