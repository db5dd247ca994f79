"""CallState: where one call is (greeting, listening, speaking, handed off…), and the moves it may make."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class CallState(StrEnum):
    """What the call is doing; the value is the name live views and listings show."""

    CONNECTING = "connecting"
    GREETING = "greeting"
    LISTENING = "listening"
    SPEAKING = "speaking"
    TAKEN_OVER = "taken_over"
    """A supervisor's transfer or hang-up is under way: the bot answers nothing more."""
    HANDED_OFF = "handed_off"
    """Bridged to a human: turns are still transcribed, never answered."""
    HUNG_UP = "hung_up"
    """The bot sent the hang-up: the line is going."""
    CLOSED = "closed"

    @property
    def shown(self) -> bool:
        """Live views and listings show this state (the others keep showing the one before)."""
        return self in _SHOWN

    @property
    def monitoring(self) -> bool:
        """The bot answers nothing (a human has, or is about to have, the caller); turns are still kept."""
        return self in (CallState.TAKEN_OVER, CallState.HANDED_OFF)

    @property
    def conversing(self) -> bool:
        """The bot and the caller are talking: the bot's replies move it between speaking and listening."""
        return self in (CallState.GREETING, CallState.LISTENING, CallState.SPEAKING)


_SHOWN = frozenset(
    {CallState.CONNECTING, CallState.GREETING, CallState.LISTENING, CallState.SPEAKING, CallState.HANDED_OFF}
)
_ENDS = {CallState.TAKEN_OVER, CallState.HANDED_OFF, CallState.HUNG_UP, CallState.CLOSED}

TRANSITIONS: dict[CallState, frozenset[CallState]] = {
    CallState.CONNECTING: frozenset({CallState.GREETING, CallState.CLOSED}),
    CallState.GREETING: frozenset({CallState.SPEAKING, CallState.LISTENING, *_ENDS}),
    CallState.LISTENING: frozenset({CallState.SPEAKING, *_ENDS}),
    CallState.SPEAKING: frozenset({CallState.LISTENING, *_ENDS}),
    CallState.TAKEN_OVER: frozenset({CallState.HANDED_OFF, CallState.HUNG_UP, CallState.CLOSED}),
    # A transfer nobody answered gives the caller back to the bot.
    CallState.HANDED_OFF: frozenset({CallState.LISTENING, CallState.CLOSED}),
    CallState.HUNG_UP: frozenset({CallState.CLOSED}),
    CallState.CLOSED: frozenset(),
}
"""Every move a call may make; anything else is a bug and raises IllegalTransition."""


class IllegalTransition(RuntimeError):
    """A move TRANSITIONS does not allow."""


class CallStates:
    """One call's state; each move is checked against TRANSITIONS and reported to `on_change`."""

    def __init__(self, on_change: Callable[[CallState, CallState], None]) -> None:
        self.current = CallState.CONNECTING
        self.shown = CallState.CONNECTING
        """The last state live views were shown."""
        self._on_change = on_change

    def move(self, to: CallState) -> None:
        """Go to `to` (staying put is no move); raises IllegalTransition when TRANSITIONS forbids it."""
        before = self.current
        if to == before:
            return
        if to not in TRANSITIONS[before]:
            raise IllegalTransition(f"{before} → {to}")
        self.current = to
        if to.shown:
            self.shown = to
        self._on_change(before, to)

    def spoke(self) -> None:
        """A reply's first audio: speaking, unless a human has (or is getting) the call."""
        if self.current in (CallState.GREETING, CallState.LISTENING):
            self.move(CallState.SPEAKING)

    def quiet(self) -> None:
        """A reply ended (played, cut, or never started): listening, if the bot was talking."""
        if self.current in (CallState.GREETING, CallState.SPEAKING):
            self.move(CallState.LISTENING)

    @property
    def closed(self) -> bool:
        """The call has ended."""
        return self.current is CallState.CLOSED
