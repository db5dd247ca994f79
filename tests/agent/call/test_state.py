"""CallState: the moves a call may make, the ones it may not, and what live views are shown."""

from __future__ import annotations

import pytest

from agent.call.state import TRANSITIONS, CallState, CallStates, IllegalTransition


def states() -> tuple[CallStates, list[tuple[CallState, CallState]]]:
    moves: list[tuple[CallState, CallState]] = []
    return CallStates(lambda before, now: moves.append((before, now))), moves


def test_a_call_greets_talks_hands_off_and_closes() -> None:
    call, moves = states()
    for to in (CallState.GREETING, CallState.SPEAKING, CallState.LISTENING, CallState.HANDED_OFF):
        call.move(to)
    call.move(CallState.LISTENING)  # nobody answered: the caller is the bot's again
    call.move(CallState.CLOSED)
    assert [now for _, now in moves] == [
        "greeting", "speaking", "listening", "handed_off", "listening", "closed",
    ]  # fmt: skip
    assert call.closed


@pytest.mark.parametrize(
    ("start", "to"),
    [
        (CallState.CONNECTING, CallState.SPEAKING),
        (CallState.HANDED_OFF, CallState.SPEAKING),
        (CallState.HUNG_UP, CallState.LISTENING),
        (CallState.TAKEN_OVER, CallState.LISTENING),
        (CallState.CLOSED, CallState.GREETING),
    ],
)
def test_an_illegal_move_raises_and_changes_nothing(start: CallState, to: CallState) -> None:
    call, moves = states()
    call.current = start
    with pytest.raises(IllegalTransition):
        call.move(to)
    assert call.current is start and moves == []


def test_the_closed_state_is_final_and_every_other_state_can_close() -> None:
    assert TRANSITIONS[CallState.CLOSED] == frozenset()
    assert all(CallState.CLOSED in TRANSITIONS[s] for s in CallState if s is not CallState.CLOSED)


def test_replies_move_only_a_conversing_call_between_speaking_and_listening() -> None:
    call, _ = states()
    call.move(CallState.GREETING)
    call.spoke()
    assert call.current is CallState.SPEAKING
    call.quiet()
    assert call.current is CallState.LISTENING
    call.move(CallState.HANDED_OFF)
    call.spoke()  # a line said after the handoff: the call stays handed off
    call.quiet()
    assert call.current is CallState.HANDED_OFF


def test_live_views_keep_the_names_they_always_showed() -> None:
    call, _ = states()
    call.move(CallState.GREETING)
    call.move(CallState.TAKEN_OVER)  # not a name live views know: they keep showing the one before
    assert call.shown is CallState.GREETING
    call.move(CallState.HANDED_OFF)
    assert call.shown == "handed_off"
    assert {s.value for s in CallState if s.shown} == {
        "connecting", "greeting", "listening", "speaking", "handed_off",
    }  # fmt: skip
    assert CallState.LISTENING == "listening"  # compared and stored as its plain name
