"""Transcript text: removing Whisper's sound annotations, normalizing for comparison, and word error rate.

`normalize_transcript` puts a reference and an ASR hypothesis into one canonical form (lowercase, no
punctuation, numbers as words, one spelling of "okay" and "mm-hmm", hesitations dropped), so that WER
counts misheard words rather than formatting.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from pipelines.speech_text import cardinal

_ANNOTATION = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*\s][^*]*\*|[♪♫][^♪♫]*[♪♫]|[♪♫]")
_SPACES = re.compile(r"\s+")


def strip_annotations(text: str) -> str:
    """Remove Whisper's sound annotations ("[MUSIC]", "(upbeat music)", "*sighs*", "♪ la ♪"); tidy spaces."""
    return _SPACES.sub(" ", _ANNOTATION.sub(" ", text)).strip()


_DIGITS = "zero one two three four five six seven eight nine".split()
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(n: int) -> str:
    """A non-negative integer in cardinal words: 21 → "twenty one", 1500 → "one thousand five hundred".

    The same words the bot speaks (`speech_text.cardinal`), without hyphens, so a number the bot says
    and one the caller says compare equal.
    """
    if n < 0:
        raise ValueError(f"number_words takes a non-negative integer, got {n}")
    if n >= 10**12:
        return _digit_words(str(n))  # nobody says that as one number
    return cardinal(n).replace("-", " ")


def _ordinal(words: str) -> str:
    *head, last = words.split(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _digit_words(digits: str) -> str:
    return " ".join(_DIGITS[int(d)] for d in digits if d.isdigit())


def _integer_words(digits: str) -> str:
    # Runs of 4+ digits or with a leading zero are PINs, extensions and account numbers on a phone line,
    # read digit by digit; shorter runs are quantities ("21" → "twenty one").
    if len(digits) >= 4 or (len(digits) > 1 and digits[0] == "0"):
        return _digit_words(digits)
    return number_words(int(digits))


_MONEY = re.compile(r"\$(\d[\d,]*)(?:\.(\d\d))?")
_DIGIT_SEQUENCE = re.compile(r"\b\d+(?:[-.]\d+){2,}\b|\b\d{3}-\d{4}\b")  # 555-0199, 1-800-555-0199
_NUMBER = re.compile(r"\b(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(?!\d)")


def _money_words(match: re.Match[str]) -> str:
    dollars = number_words(int(match.group(1).replace(",", "")))
    cents = match.group(2)
    return f" {dollars} dollars" + (f" {number_words(int(cents))}" if cents and int(cents) else "") + " "


def _number_match_words(match: re.Match[str]) -> str:
    whole, fraction, suffix = match.group(1), match.group(2), match.group(3)
    words = number_words(int(whole.replace(",", ""))) if "," in whole else _integer_words(whole)
    if fraction is not None:
        words += " point " + _digit_words(fraction)
    elif suffix is not None:
        words = _ordinal(number_words(int(whole.replace(",", ""))))
    return f" {words} "


_SYMBOLS = {"&": " and ", "%": " percent ", "#": " pound ", "@": " at ", "+": " plus ", "*": " star "}
_MM_HMM = re.compile(r"(?<![\w'])m+[- ]?h+m+\b")
_UH_HUH = re.compile(r"(?<![\w'])uh+[- ]?huh\b")
_HESITATIONS = frozenset({"um", "umm", "uh", "uhh", "er", "erm", "hm", "hmm", "mm", "mmm"})
_SPELLINGS = {"ok": "okay", "alright": "all right", "cannot": "can not"}
_CONTRACTION = re.compile(
    r"\b(?:can|won|ain|shan)'t\b|\blet's\b|\bi'm\b|n't\b|'re\b|'ll\b|'ve\b|'d\b"
    r"|\b(?:it|that|what|there|here|he|she|who|where|how)'s\b"  # other "'s" may be possessive
)
_EXPANSIONS = {"can't": "can not", "won't": "will not", "ain't": "is not", "shan't": "shall not"}
_EXPANSIONS |= {"let's": "let us", "i'm": "i am", "n't": " not", "'re": " are", "'ll": " will"}
_EXPANSIONS |= {"'ve": " have", "'d": " would"}


def _expand_contraction(match: re.Match[str]) -> str:
    word = match[0]
    return _EXPANSIONS.get(word) or word[:-2] + " is"


def normalize_transcript(text: str) -> str:
    """Canonical form for comparing transcripts.

    Lowercase; sound annotations removed; "$5" → "five dollars", "5%" → "five percent", "#" → "pound";
    numbers as words ("21" → "twenty one", "3rd" → "third", "2.5" → "two point five", and digit by digit
    for 4+ digit runs, leading zeros and dashed sequences like "555-0199"); contractions expanded
    ("don't" → "do not", "I'm" → "i am", "that's" → "that is"); "mm-hmm"/"mhm"/"mm hmm" → "mhm",
    "uh-huh" → "uhhuh", "ok" → "okay"; hesitations ("um", "uh", "hmm") dropped; hyphens split words;
    other punctuation removed; spaces collapsed.
    """
    text = unicodedata.normalize("NFKC", text).lower().replace("’", "'").replace("‘", "'")
    text = strip_annotations(text)
    text = _MONEY.sub(_money_words, text)
    text = _DIGIT_SEQUENCE.sub(lambda m: f" {_digit_words(m.group(0))} ", text)
    text = _NUMBER.sub(_number_match_words, text)
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = _MM_HMM.sub("mhm", text)
    text = _UH_HUH.sub("uhhuh", text)
    text = _CONTRACTION.sub(_expand_contraction, text)
    kept = []
    for raw in _SPACES.split(text):
        for word in raw.replace("-", " ").replace("/", " ").split():
            word = "".join(c for c in word if c == "'" or unicodedata.category(c)[0] not in "PS").strip("'")
            word = _SPELLINGS.get(word, word)
            if word and word not in _HESITATIONS:
                kept.append(word)
    return " ".join(kept)


PHANTOM_PHRASES = frozenset(
    normalize_transcript(phrase)
    for phrase in (
        "Thank you.|Thank you very much.|Thanks.|Thanks for watching!|Thank you for watching.|"
        "Thanks for listening.|Please subscribe.|Subscribe.|Like and subscribe.|you|Bye.|Bye-bye.|So.|"
        "Oh.|The end.|See you next time.|Subtitles by the Amara.org community"
    ).split("|")
)
"""Whole transcripts Whisper makes up from breath, line noise or music, normalized: on their own, with
little audio behind them, they are not to be trusted."""


@dataclass(frozen=True)
class WordErrors:
    """Word-level edit counts of a hypothesis against a reference (one minimal alignment)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        """Substitutions + deletions + insertions."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """errors / reference words; with an empty reference, the number of inserted words (0.0 if none)."""
        return self.errors / max(self.reference_words, 1)


def word_errors(reference: str, hypothesis: str, *, normalize: bool = True) -> WordErrors:
    """Align two transcripts word by word (Levenshtein) and count the edits.

    Both are passed through `normalize_transcript` first unless `normalize` is False (then they are only
    split on whitespace).
    """
    if normalize:
        reference, hypothesis = normalize_transcript(reference), normalize_transcript(hypothesis)
    ref, hyp = reference.split(), hypothesis.split()
    # Each cell holds (cost, substitutions, deletions, insertions); ties prefer substitutions, so
    # "a b" vs "a c" counts one substitution rather than a deletion plus an insertion.
    previous = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i in range(1, len(ref) + 1):
        current = [(i, 0, i, 0)]
        for j in range(1, len(hyp) + 1):
            diagonal = previous[j - 1]
            if ref[i - 1] == hyp[j - 1]:
                best = diagonal
            else:
                best = (diagonal[0] + 1, diagonal[1] + 1, diagonal[2], diagonal[3])
            up, left = previous[j], current[j - 1]
            if up[0] + 1 < best[0]:
                best = (up[0] + 1, up[1], up[2] + 1, up[3])
            if left[0] + 1 < best[0]:
                best = (left[0] + 1, left[1], left[2], left[3] + 1)
            current.append(best)
        previous = current
    _, substitutions, deletions, insertions = previous[-1]
    return WordErrors(substitutions, deletions, insertions, len(ref))


def wer(reference: str, hypothesis: str, *, normalize: bool = True) -> float:
    """Word error rate of `hypothesis` against `reference` (normalized first unless `normalize` is False)."""
    return word_errors(reference, hypothesis, normalize=normalize).wer


def corpus_wer(pairs: Iterable[tuple[str, str]], *, normalize: bool = True) -> float:
    """WER over many (reference, hypothesis) pairs: all edits over all reference words.

    Unlike the mean of per-utterance WERs, a one-word utterance does not weigh as much as a long one.
    """
    errors = words = 0
    for reference, hypothesis in pairs:
        counts = word_errors(reference, hypothesis, normalize=normalize)
        errors += counts.errors
        words += counts.reference_words
    return errors / max(words, 1)
