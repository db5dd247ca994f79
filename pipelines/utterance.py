"""What a caller's words say about the turn: only an acknowledgement, or a whole thought?

`is_backchannel`: "mm-hmm", "okay, got it" over the bot mean "go on", not a new turn.
`looks_complete`: a speculative transcript taken at a pause that already reads as a finished turn
("What's my balance?"), so the session can answer without waiting out the end-of-turn silence
(semantic endpointing); "I'd like to check my..." or "and" at the end mean the caller is not done.
Whisper's punctuation follows the speaker's prosody: a falling, finished phrase gets a full stop or
a question mark, a trailing one gets "..." or a comma.
"""

from __future__ import annotations

import re

_BACKCHANNELS = {
    tuple(phrase.split())
    for phrase in (
        "mm hmm", "mhm", "mm", "hmm", "hm", "uh huh", "um hmm", "okay", "ok", "kay", "yeah", "yep",
        "yup", "yes", "ya", "right", "sure", "got it", "i see", "alright", "all right", "oh", "ah",
        "cool", "uh", "um",
    )
}  # fmt: skip
_FILLERS = {("uh",), ("um",)}  # fine beside an acknowledgement ("uh, okay"), not on their own
_NOT_WORD = re.compile(r"[^a-z' ]+")


def is_backchannel(text: str) -> bool:
    """True when `text` is only an acknowledgement ("Mm-hmm.", "okay, got it", "Yeah yeah").

    Normalized (lower case, punctuation and hyphens dropped), it must be 1 to 3 items of a small list;
    two-word items ("got it", "i see") count as one. Meant for speech that overlapped the bot: there it
    means "go on"; as an answer to a question, "yes" is of course an answer.
    """
    cleaned = _NOT_WORD.sub(" ", text.lower().replace("’", "'").replace(".", ""))
    words = [word.strip("'") for word in cleaned.split() if word.strip("'")]
    items: list[tuple[str, ...]] = []
    i = 0
    while i < len(words):
        two, one = tuple(words[i : i + 2]), (words[i],)
        if len(two) == 2 and two in _BACKCHANNELS:
            items.append(two)
            i += 2
        elif one in _BACKCHANNELS:
            items.append(one)
            i += 1
        else:
            return False
    return 1 <= len(items) <= 3 and any(item not in _FILLERS for item in items)


_CONTINUES = frozenset(
    """a an the and or but so because if then than that which who whose when while where whether
    to of for with from at in on into onto by about as like my your our their his its this these
    those is are was were am be been will would can could should shall may might must do does did
    have has had not no i we they he she um uh er erm please also plus""".split()
)
_FINAL_PUNCTUATION = (".", "?", "!")
_WORD = re.compile(r"[a-z0-9']+")


def looks_complete(text: str) -> bool:
    """True when `text` (a Whisper transcript) ends like a finished turn.

    It must end in a full stop, question mark or exclamation mark (not "..." or "…"), and its last
    word must not be one a sentence goes on from ("and", "the", "my", "to", "um"...). Numbers count as
    complete: "It's 4 5 1 2." is a whole answer.
    """
    stripped = text.strip().strip("\"'”’)")
    if not stripped.endswith(_FINAL_PUNCTUATION) or stripped.endswith(("..", "…")):
        return False
    words = _WORD.findall(stripped.lower().replace("’", "'"))
    return bool(words) and words[-1] not in _CONTINUES
