"""The names escalation rules may use: signals and built-in intents (no imports, so config validation
can use them without loading the signal machinery)."""

from __future__ import annotations

BUILTIN_INTENT_NAMES = ("asked_for_human", "cancel", "complaint")

SIGNALS: dict[str, str] = {
    "turns": "caller turns so far",
    "intent": "the last turn's intent (YAML intents, or asked_for_human / cancel / complaint)",
    "intent_confidence": "how sure the intent match is, 0-1",
    "asked_for_human": "the caller asked for a person",
    "understood": "the last turn matched an intent (scripted) or was answered (LLM)",
    "misunderstood_in_a_row": "turns in a row the bot did not understand",
    "misunderstood": "turns the bot did not understand, in all",
    "sentiment": "the last turn's sentiment, -1..1",
    "sentiment.rolling": "mean sentiment of the last turns",
    "sentiment.trend": "last minus first sentiment of the last turns (< 0: getting worse)",
    "frustration": "the last turn had a frustration cue",
    "frustration_count": "turns with a frustration cue",
    "raised_voice": "the last turn was much louder than the caller's earlier turns",
    "repeated_question": "the last turn repeats an earlier one",
    "barge_ins": "times the caller cut the bot off",
    "dialogue_failures": "times the dialogue failed (LLM down, slow, broken; script errors)",
    "tool_failures": "tool calls that failed or timed out",
    "silence_timeouts": "times the caller said nothing for too long",
    "transfer_failures": "transfers nobody answered or that failed",
    "duration_s": "seconds since the call started",
    "language": "the caller's language (a code: en, es…): the detected one once sure, else the bot's",
    "language_probability": "how sure the language detection is, 0-1 (none until detected)",
    "language_supported": "the bot has a voice for the caller's language (none until detected)",
}
INTENT_SIGNAL = "intent"
