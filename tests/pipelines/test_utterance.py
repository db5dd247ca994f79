"""What a caller's words say about the turn: only an acknowledgement, or a whole sentence."""

from __future__ import annotations

import pytest

from pipelines.utterance import is_backchannel, looks_complete


@pytest.mark.parametrize(
    "text",
    [
        "Mm-hmm.", "mhm", "Uh-huh", "uh huh", "Okay.", "OK", "o.k.", "Yeah, yeah.", "right right",
        "Sure.", "Got it.", "I see.", "alright", "All right!", "okay, got it", "Yes.", "Oh, okay.",
        "yep", "Uh, okay.", "’kay",
    ],
)  # fmt: skip
def test_is_backchannel(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    [
        "", "  ", "...", "uh", "um", "no", "wait", "stop", "hold on", "yeah but I wanted a refund",
        "okay okay okay okay", "what?", "I see a problem", "hello", "right now please", "sure why not",
    ],
)  # fmt: skip
def test_is_not_backchannel(text: str) -> None:
    assert not is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    [
        "What's my balance?", "I want to check my order.", "Yes.", "It's 4 5 1 2.", "Talk to a person!",
        "My card was charged twice.", "  Thank you. ", '"Cancel it."',
    ],
)  # fmt: skip
def test_looks_complete(text: str) -> None:
    assert looks_complete(text)


@pytest.mark.parametrize(
    "text",
    [
        "", "I want to check my", "I want to check my...", "So I was calling about…", "My card and",
        "It's about the.", "I need to, um.", "Because", "hello", "I'd like to,", "and.",
    ],
)  # fmt: skip
def test_does_not_look_complete(text: str) -> None:
    assert not looks_complete(text)
