"""Transcript text: annotation stripping, the normalizer that WER relies on, and WER itself."""

from __future__ import annotations

import pytest

from pipelines.text import (
    PHANTOM_PHRASES,
    WordErrors,
    corpus_wer,
    normalize_transcript,
    number_words,
    strip_annotations,
    wer,
    word_errors,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello. [MUSIC] there", "Hello. there"),
        ("(upbeat music)", ""),
        ("♪ la la la ♪ okay ♪", "okay"),
        ("*sighs* fine", "fine"),
        ("[BLANK_AUDIO]", ""),
        ("Press 1 (or 2)", "Press 1"),
        ("no annotations here", "no annotations here"),
    ],
)
def test_strip_annotations(text: str, expected: str) -> None:
    assert strip_annotations(text) == expected


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty one"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (999, "nine hundred ninety nine"),
        (1500, "one thousand five hundred"),
        (2_000_019, "two million nineteen"),
    ],
)
def test_number_words(n: int, words: str) -> None:
    assert number_words(n) == words


def test_number_words_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        number_words(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # case, punctuation, spaces
        ("Hello,  World!", "hello world"),
        ("  Please hold...  ", "please hold"),
        ("Don’t “quote” me", "do not quote me"),
        ("Call-Forward on No Answer.", "call forward on no answer"),
        # numbers become words, the same way whichever way they were written
        ("Press 1 to mute, 2 to lock.", "press one to mute two to lock"),
        ("press one to mute two to lock", "press one to mute two to lock"),
        ("twenty-one", "twenty one"),
        ("21", "twenty one"),
        ("The 3rd and 22nd", "the third and twenty second"),
        ("2.5 times", "two point five times"),
        ("1,500 items", "one thousand five hundred items"),
        ("PIN 1234, agent 007", "pin one two three four agent zero zero seven"),
        ("555-0199", "five five five zero one nine nine"),
        ("1-800-555-0199", "one eight zero zero five five five zero one nine nine"),
        ("$5.50", "five dollars fifty"),
        ("$20", "twenty dollars"),
        ("20%", "twenty percent"),
        ("press # or *", "press pound or star"),
        ("at 4pm", "at four pm"),
        # contractions expanded, possessives kept
        ("I'm sorry, that's not valid.", "i am sorry that is not valid"),
        ("I am sorry, that is not valid.", "i am sorry that is not valid"),
        ("can't won't isn't", "can not will not is not"),
        ("Cannot", "can not"),
        ("we're, you'll, I've, she'd, let's", "we are you will i have she would let us"),
        ("John's order", "john's order"),
        # backchannels and hesitations
        ("Mm-hmm.", "mhm"),
        ("mm hmm", "mhm"),
        ("Mmhmm", "mhm"),
        ("mhm", "mhm"),
        ("I'm hmm fine", "i am fine"),
        ("Uh-huh", "uhhuh"),
        ("uh huh", "uhhuh"),
        ("Um, uh, er, yes", "yes"),
        ("OK", "okay"),
        ("o.k.", "okay"),
        # annotations and punctuation only
        ("[MUSIC]", ""),
        ("...", ""),
        ("♪", ""),
    ],
)
def test_normalize_transcript(text: str, expected: str) -> None:
    assert normalize_transcript(text) == expected


def test_normalizing_twice_changes_nothing() -> None:
    once = normalize_transcript("Press 1, then #. Mm-hmm, $5 at 4pm (laughs)")
    assert normalize_transcript(once) == once


def test_phantom_phrases_are_stored_normalized() -> None:
    assert {"thank you", "thanks for watching", "you", "bye"} <= PHANTOM_PHRASES
    assert all(normalize_transcript(p) == p for p in PHANTOM_PHRASES)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "counts"),
    [
        ("a b c", "a b c", WordErrors(0, 0, 0, 3)),
        ("a b c", "a x c", WordErrors(1, 0, 0, 3)),
        ("a b c", "a c", WordErrors(0, 1, 0, 3)),
        ("a b c", "a b c d", WordErrors(0, 0, 1, 3)),
        ("a b c", "", WordErrors(0, 3, 0, 3)),
        ("", "a b", WordErrors(0, 0, 2, 0)),
        ("", "", WordErrors(0, 0, 0, 0)),
        ("a b c d", "b c d e", WordErrors(0, 1, 1, 4)),
        ("a b", "x y z", WordErrors(2, 0, 1, 2)),
    ],
)
def test_word_errors_count_a_minimal_alignment(reference: str, hypothesis: str, counts: WordErrors) -> None:
    assert word_errors(reference, hypothesis, normalize=False) == counts


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("Press 1 to mute.", "press one to mute", 0.0),
        ("Please enter your PIN.", "Please enter your pin number.", 0.25),
        ("All circuits are busy now.", "all circuits busy now", 0.2),
        ("Thank you.", "", 1.0),
        ("Goodbye.", "Good bye", 2.0),  # one substitution, one insertion over one word
        ("", "hello", 1.0),
        ("", "", 0.0),
    ],
)
def test_wer(reference: str, hypothesis: str, expected: float) -> None:
    assert wer(reference, hypothesis) == pytest.approx(expected)


def test_wer_without_normalizing_counts_formatting() -> None:
    assert wer("Press 1.", "press one", normalize=False) == 1.0


def test_corpus_wer_weighs_utterances_by_their_length() -> None:
    pairs = [("one", "two"), ("a b c d e f g h i", "a b c d e f g h i")]
    assert corpus_wer(pairs) == pytest.approx(1 / 10)  # the mean of per-utterance WERs would be 0.5
    assert corpus_wer([]) == 0.0
