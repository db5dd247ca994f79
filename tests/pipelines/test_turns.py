"""Turn-taking on real recorded speech: starts, pauses, ends, noise, barge-in, echo and backchannels."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.turns import (
    BargeIn,
    SilenceEndpointer,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    TurnConfig,
    TurnDetector,
    TurnDiscarded,
    TurnEnded,
    TurnEvent,
)
from pipelines.vad import FRAME_MS
from tests.pipelines.speech import (
    bot_speech,
    burst,
    excerpt,
    frames,
    gain,
    librivox,
    line_noise,
    mix,
    prompt,
    run,
    silence,
    telephone_echo,
    trimmed,
    true_offset_ms,
    true_onset_ms,
)

CONFIG = TurnConfig()
LEAD_MS = 1000  # silence before each prompt


def kinds(events: Sequence[TurnEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


E = TypeVar("E", SpeechStarted, SpeechPaused, SpeechResumed, TurnEnded, TurnDiscarded, BargeIn)


def only(events: Sequence[TurnEvent], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# ------------------------------------------------------------------------------------- one turn

SPEECH = [
    (8000, "asterisk", "vm-goodbye"),
    (8000, "asterisk", "agent-pass"),
    (8000, "asterisk", "all-circuits-busy-now"),
    (8000, "asterisk", "activated"),
    (8000, "asterisk", "tt-weasels"),
    (8000, "asterisk", "vm-intro"),
    (16000, "asterisk", "hello-world"),
    (16000, "asterisk", "conf-onlyperson"),
    (16000, "librivox", "sense_and_sensibility_01_austen_64kb-0880"),
    (16000, "librivox", "sense_and_sensibility_01_austen_64kb-0930"),
]


# The true onset is where the level first crosses this; LibriVox recordings hiss at -47 dBFS.
ONSET_DBFS = {"asterisk": -40.0, "librivox": -35.0}


def _speech(source: str, name: str, rate: int) -> bytes:
    return prompt(name, rate) if source == "asterisk" else librivox(name, rate)


@pytest.mark.parametrize("noisy", [False, True], ids=["clean", "line-noise"])
@pytest.mark.parametrize(("rate", "source", "name"), SPEECH)
def test_one_turn_per_utterance(rate: int, source: str, name: str, noisy: bool) -> None:
    speech = _speech(source, name, rate)
    audio = silence(LEAD_MS, rate) + speech + silence(1500, rate)
    if noisy:
        audio = mix(audio, line_noise(len(audio) / 2 / rate, rate, clicks=2))
    onset = LEAD_MS + true_onset_ms(speech, rate, ONSET_DBFS[source])
    offset = LEAD_MS + true_offset_ms(speech, rate, ONSET_DBFS[source])

    events = run(TurnDetector(rate), audio)

    names = [k for k in kinds(events) if k not in ("SpeechPaused", "SpeechResumed")]
    assert names == ["SpeechStarted", "TurnEnded"]
    (started,), (ended,) = only(events, SpeechStarted), only(events, TurnEnded)
    assert abs(started.onset_ms - onset) <= 100
    assert started.at_ms - onset <= 200  # decided within 200 ms of the true onset
    assert ended.start_ms == started.onset_ms
    assert ended.at_ms - ended.end_ms == CONFIG.end_silence_ms
    assert not ended.forced
    # The turn's audio is the input from pre-roll to tail: the first syllable and the last are in it.
    audio_start = ended.start_ms - CONFIG.preroll_ms
    audio_end = audio_start + len(ended.audio) // 2 * 1000 // rate
    assert audio_start <= onset - 100
    assert audio_end >= offset
    assert audio_end == ended.end_ms + CONFIG.tail_ms
    assert ended.audio == audio[2 * rate * audio_start // 1000 : 2 * rate * audio_end // 1000]


def test_final_pause_carries_the_final_audio() -> None:
    # When nothing follows a pause, the speculative transcript is the final one: same audio.
    rate = 8000
    events = run(TurnDetector(rate), silence(500, rate) + prompt("agent-pass") + silence(1500, rate))
    assert kinds(events)[-2:] == ["SpeechPaused", "TurnEnded"]
    paused, ended = events[-2:]
    assert isinstance(paused, SpeechPaused) and isinstance(ended, TurnEnded)
    assert paused.audio == ended.audio
    assert paused.at_ms - ended.end_ms == CONFIG.pause_ms


def test_end_turn_ends_a_paused_turn_at_once_with_the_paused_audio() -> None:
    """Semantic endpointing: during a pause the session may end the turn without waiting out the silence."""
    rate = 8000
    detector = TurnDetector(rate)
    assert detector.end_turn() is None  # no turn
    speech = silence(500, rate) + prompt("agent-pass")
    events = run(detector, speech)
    assert detector.in_turn and not detector.paused and detector.end_turn() is None  # still talking
    begun = detector.turns_begun
    events = run(detector, silence(CONFIG.pause_ms + 40, rate))
    (paused,) = only(events, SpeechPaused)
    assert detector.paused
    ended = detector.end_turn()
    assert ended is not None and ended.early and not ended.forced
    assert ended.audio == paused.audio and ended.at_ms - ended.end_ms < CONFIG.end_silence_ms
    assert not detector.in_turn and detector.end_turn() is None
    # Nothing more comes of that turn; the caller's next words start the next one.
    assert run(detector, silence(1500, rate)) == []
    later = run(detector, prompt("vm-goodbye") + silence(1500, rate))
    assert kinds(later)[0] == "SpeechStarted" and kinds(later)[-1] == "TurnEnded"
    assert detector.turns_begun == begun + 1


def test_end_turn_leaves_a_turn_too_short_to_count_going() -> None:
    """ "Bye… bye.": the first word alone is too short to end the turn early; the turn goes on, the
    second word joins it, and it ends as usual after the silence."""
    rate = 8000
    detector = TurnDetector(rate, TurnConfig(min_turn_ms=800))
    word = prompt("vm-goodbye")  # about 0.6 s of speech
    events = run(detector, silence(500, rate) + word + silence(CONFIG.pause_ms + 40, rate))
    assert only(events, SpeechPaused) and detector.end_turn() is None and detector.in_turn
    events = run(detector, word + silence(1500, rate))
    (ended,) = only(events, TurnEnded)
    assert not ended.early and ended.end_ms - ended.start_ms >= 800


@pytest.mark.parametrize("trailing_ms", [0, 100, 300])
def test_finish_ends_the_turn_of_a_caller_who_hung_up_right_after_speaking(trailing_ms: int) -> None:
    """The stream ends before the turn's silence has run out: its words still make a turn, with the
    whole speech (as the usual end would carry it) and whatever silence arrived after it."""
    rate = 8000
    speech = silence(500, rate) + prompt("agent-pass")
    usual = only(run(TurnDetector(rate), speech + silence(1500, rate)), TurnEnded)[0]
    detector = TurnDetector(rate)
    run(detector, speech + silence(trailing_ms, rate))
    assert detector.in_turn
    ended = detector.finish()
    assert isinstance(ended, TurnEnded) and not ended.early
    assert (ended.start_ms, ended.end_ms) == (usual.start_ms, usual.end_ms)
    assert (
        usual.audio.startswith(ended.audio)
        and len(ended.audio) >= len(usual.audio) - 2 * rate * CONFIG.tail_ms // 1000
    )
    assert not detector.in_turn and detector.finish() is None
    # The next turn is a turn of its own (nothing of this one carried into its pre-roll).
    later = run(detector, silence(500, rate) + prompt("vm-goodbye") + silence(1500, rate))
    assert kinds(later)[0] == "SpeechStarted" and kinds(later)[-1] == "TurnEnded"


def test_finish_without_a_turn_or_with_too_little_speech() -> None:
    rate = 8000
    detector = TurnDetector(rate)
    assert detector.finish() is None
    run(detector, silence(500, rate) + excerpt(trimmed(prompt("hello", rate), rate), rate, 0, 200))
    assert detector.in_turn  # 200 ms of speech starts a turn, but is too short to be one
    discarded = detector.finish()
    assert isinstance(discarded, TurnDiscarded) and discarded.reason == "too_short"
    assert detector.finish() is None and not detector.in_turn


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("gap_ms", "expected"),
    [
        (300, ["SpeechStarted", "SpeechPaused", "SpeechResumed", "SpeechPaused", "TurnEnded"]),
        (1200, ["SpeechStarted", "SpeechPaused", "TurnEnded"] * 2),
    ],
    ids=["short-pause", "two-turns"],
)
def test_pause_between_phrases(rate: int, gap_ms: int, expected: list[str]) -> None:
    first, second = trimmed(prompt("auth-thankyou", rate), rate), trimmed(prompt("vm-goodbye", rate), rate)
    audio = silence(LEAD_MS, rate) + first + silence(gap_ms, rate) + second + silence(1500, rate)
    events = run(TurnDetector(rate), audio)
    assert kinds(events) == expected


@pytest.mark.parametrize(
    ("pattern", "signals"),
    [
        ("1" + "0" * 12, {3: "pause", 6: "end"}),
        ("1" + "000" + "11" + "0" * 7, {3: "pause", 5: "resume", 8: "pause", 11: "end"}),
        ("1" + "00" + "1" + "0000", {4: "pause", 6: "end"}),  # one speech frame is not speech
        ("1" + "00" + "11" + "0" * 6, {7: "pause", 10: "end"}),  # two in a row are
    ],
)
def test_silence_endpointer(pattern: str, signals: dict[int, str]) -> None:
    endpointer = SilenceEndpointer(pause=3, end=6)
    endpointer.start(0)
    seen: dict[int, str] = {}
    for index, char in enumerate(pattern[1:], 1):
        signal = endpointer.update(char == "1", index)
        if signal:
            seen[index] = signal
        if signal == "end":
            break
    assert seen == signals


# ------------------------------------------------------------------------------------- not speech


@pytest.mark.parametrize("rate", [8000, 16000])
def test_line_noise_makes_no_turn(rate: int) -> None:
    events = run(TurnDetector(rate), line_noise(30.0, rate, seed=7, clicks=8))
    assert not only(events, TurnEnded)
    assert not only(events, BargeIn)
    # Anything that started must have been discarded as noise.
    assert kinds(events) == ["SpeechStarted", "TurnDiscarded"] * (len(events) // 2)


@pytest.mark.parametrize("rate", [8000, 16000, 32000])
def test_digital_silence_makes_nothing(rate: int) -> None:
    assert run(TurnDetector(rate), silence(10_000, rate)) == []


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("kind", ["cough", "speech"])
def test_short_sounds_are_discarded(rate: int, kind: str) -> None:
    sound = (
        burst(120, rate) if kind == "cough" else excerpt(trimmed(prompt("hello", rate), rate), rate, 0, 120)
    )
    events = run(TurnDetector(rate), silence(LEAD_MS, rate) + sound + silence(1500, rate))
    assert kinds(events) in ([], ["SpeechStarted", "TurnDiscarded"])
    assert all(e.reason == "too_short" for e in only(events, TurnDiscarded))


def test_max_turn_forces_an_end() -> None:
    rate = 8000
    config = TurnConfig(max_turn_s=1.0)
    events = run(
        TurnDetector(rate, config), silence(LEAD_MS, rate) + prompt("vm-intro") + silence(1500, rate)
    )
    ended = only(events, TurnEnded)
    assert ended[0].forced
    assert ended[0].at_ms - ended[0].start_ms == ended[0].end_ms - ended[0].start_ms == 1000
    assert len(ended[0].audio) // 2 * 1000 // rate == CONFIG.preroll_ms + 1000  # no tail: cut mid-speech
    assert len(ended) >= 3  # the rest of the 5.6 s prompt goes on in new turns, none longer
    assert all(e.end_ms - e.start_ms <= 1000 for e in ended)
    assert ended[1].start_ms >= ended[0].end_ms  # the next turn does not repeat this one


# -------------------------------------------------------------------------------------- barge-in

BARGE_IN_PROMPTS = ["vm-goodbye", "auth-thankyou", "agent-pass", "hello-world", "tt-weasels", "vm-intro"]
BOT_LEAD_MS = 500  # the bot starts speaking this far into the call
CALLER_AT_MS = 1000  # ... and the caller starts talking this far into the bot's speech


def _over_the_bot(
    rate: int,
    caller_speech: bytes,
    *,
    echo_db: float = -20.0,
    echo_delay_ms: int = 40,
    hybrid: bool = False,
) -> bytes:
    """The caller channel: the bot's echo (attenuated, late), the caller's speech, a quiet bad line."""
    bot = bot_speech(rate)
    echo = gain(silence(BOT_LEAD_MS + echo_delay_ms, rate) + bot, echo_db)
    if hybrid:
        echo = telephone_echo(echo, rate)
    speech = silence(BOT_LEAD_MS + CALLER_AT_MS, rate) + caller_speech if caller_speech else b""
    length = max(len(echo), len(speech)) / 2 / rate + 0.5
    return mix(echo, speech, line_noise(length, rate, clicks=0 if speech else 5))


def _with_the_bot(rate: int, caller: bytes) -> list[TurnEvent]:
    return run(TurnDetector(rate), caller, reference=bot_speech(rate), bot_from_ms=BOT_LEAD_MS)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("hybrid", [False, True], ids=["delay", "hybrid-ulaw"])
@pytest.mark.parametrize(("echo_db", "echo_delay_ms"), [(-20, 0), (-20, 40), (-10, 60), (-6, 40)])
def test_the_bots_own_echo_never_barges_in(
    rate: int, hybrid: bool, echo_db: float, echo_delay_ms: int
) -> None:
    caller = _over_the_bot(rate, b"", echo_db=echo_db, echo_delay_ms=echo_delay_ms, hybrid=hybrid)
    assert _with_the_bot(rate, caller) == []  # no barge-in, and no turn made of the bot's words either


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("caller_db", [0, -6], ids=["caller-6dB-over-bot", "caller-as-loud-as-bot"])
@pytest.mark.parametrize("name", BARGE_IN_PROMPTS)
def test_caller_speech_over_the_bot_barges_in_within_300_ms(rate: int, caller_db: float, name: str) -> None:
    speech = prompt(name, rate)
    onset = BOT_LEAD_MS + CALLER_AT_MS + true_onset_ms(speech, rate)
    events = _with_the_bot(rate, _over_the_bot(rate, gain(speech, caller_db)))
    (barge_in,) = only(events, BargeIn)  # exactly one
    assert 0 < barge_in.at_ms - onset <= 300
    assert abs(barge_in.onset_ms - onset) <= 60
    assert len(only(events, TurnEnded)) == 1  # the interruption is a turn to transcribe


def test_barge_in_waits_for_200_ms_of_actual_speech() -> None:
    # "Ac-tivated": 140 ms of voice, then a 160 ms stop closure where only the bot's echo is heard.
    # Firing on 140 ms would also fire on every short "oh"; so this one takes about half a second.
    rate = 8000
    speech = prompt("activated", rate)
    onset = BOT_LEAD_MS + CALLER_AT_MS + true_onset_ms(speech, rate)
    (barge_in,) = only(_with_the_bot(rate, _over_the_bot(rate, speech)), BargeIn)
    assert 300 < barge_in.at_ms - onset <= 550


def test_barge_in_needs_the_bot_speaking_and_fires_once_per_utterance() -> None:
    rate = 8000
    speech = silence(500, rate) + prompt("agent-pass") + silence(1000, rate)
    detector = TurnDetector(rate)
    assert not only(run(detector, speech), BargeIn)  # bot silent: a turn, no barge-in
    detector.set_bot_speaking(True)
    assert detector.bot_speaking
    assert len(only(run(detector, speech + speech), BargeIn)) == 1
    detector.set_bot_speaking(False)
    detector.set_bot_speaking(True)  # the bot's next utterance can be interrupted again
    assert len(only(run(detector, speech), BargeIn)) == 1


@pytest.mark.parametrize(
    ("sound", "barges_in"),
    [
        ("short", False),  # 160 ms of "oh": under barge_in_ms
        ("murmur", False),  # "oh" 20 dB below the caller's own voice
        ("spoken", True),  # the same "oh" at the caller's voice
    ],
)
def test_backchannels_do_not_barge_in(sound: str, barges_in: bool) -> None:
    rate = 8000
    oh = trimmed(prompt("digits/oh", rate), rate)
    sounds = {"short": excerpt(oh, rate, 0, 160), "murmur": gain(oh, -20), "spoken": oh}
    detector = TurnDetector(rate)
    first_turn = silence(500, rate) + prompt("hello", rate) + silence(1000, rate)
    assert len(only(run(detector, first_turn), TurnEnded)) == 1  # the caller's voice, bot silent
    detector.set_bot_speaking(True)
    events = run(detector, silence(500, rate) + sounds[sound] + silence(1000, rate))
    assert bool(only(events, BargeIn)) == barges_in


# -------------------------------------------------------------------------------------- contracts


@pytest.mark.parametrize(("rate", "size"), [(8000, 318), (8000, 640), (16000, 320), (16000, 0)])
def test_frames_of_the_wrong_size_are_refused(rate: int, size: int) -> None:
    detector = TurnDetector(rate)
    with pytest.raises(ValueError, match=r"expected exactly \d+ bytes \(20 ms"):
        detector.feed(bytes(size))
    with pytest.raises(ValueError, match="reference frame"):
        detector.feed_reference(bytes(size))


def test_unsupported_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="22050 Hz is not supported"):
        TurnDetector(22050)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"start_ms": 0}, "start_ms must be > 0"),
        ({"max_turn_s": -1}, "max_turn_s must be > 0"),
        ({"preroll_ms": -20}, "preroll_ms must be >= 0"),
        ({"tail_ms": 300}, r"tail_ms \(300\) <= pause_ms"),
        ({"pause_ms": 800}, r"pause_ms \(800\) < end_silence_ms"),
        ({"max_turn_s": 0.1}, "max_turn_s"),
    ],
)
def test_config_is_validated(fields: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TurnConfig(**fields)  # type: ignore[arg-type]


class ScriptedVad:
    """A VAD that says what it is told: one bool per frame."""

    def __init__(self, script: Sequence[bool]) -> None:
        self._script = iter(script)

    def is_speech(self, frame: bytes) -> bool:
        return next(self._script)


LOUD, QUIET = b"\x00\x10" * 160, b"\x01\x00" * 160  # -18 dBFS and -90 dBFS frames at 8 kHz


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 60)), max_size=30))
def test_event_grammar_holds_for_any_speech_pattern(runs: list[tuple[bool, int]]) -> None:
    script = [speech for speech, length in runs for _ in range(length)] + [False] * 60
    detector = TurnDetector(8000, vad=ScriptedVad(script))
    events: list[TurnEvent] = []
    for speech in script:
        events.extend(detector.feed(LOUD if speech else QUIET))
    in_turn = paused = False
    last_at = 0
    for event in events:
        at = event.at_ms
        assert at >= last_at and at % FRAME_MS == 0
        last_at = at
        if isinstance(event, SpeechStarted):
            assert not in_turn
            assert event.at_ms - event.onset_ms >= CONFIG.start_ms
            in_turn = True
        elif isinstance(event, SpeechPaused | SpeechResumed):
            assert in_turn and paused == isinstance(event, SpeechResumed)
            paused = not paused
        elif isinstance(event, TurnEnded | TurnDiscarded):
            assert in_turn
            in_turn = paused = False
            if isinstance(event, TurnEnded):
                assert event.end_ms - event.start_ms >= CONFIG.min_turn_ms
                frames_in_audio = len(event.audio) // len(LOUD)
                preroll = min(CONFIG.preroll_ms, event.start_ms) // FRAME_MS
                assert (
                    frames_in_audio == preroll + (event.end_ms - event.start_ms + CONFIG.tail_ms) // FRAME_MS
                )
    assert not in_turn  # 1.2 s of silence at the end closes every turn
    assert not only(events, BargeIn)


def test_detection_is_deterministic() -> None:
    rate = 8000
    audio = _over_the_bot(rate, prompt("agent-pass", rate))
    assert _with_the_bot(rate, audio) == _with_the_bot(rate, audio)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_cost_per_frame(rate: int, record_property: Callable[[str, object], None]) -> None:
    """Vad + TurnDetector where the bot talks and the caller talks over it: the costliest case."""
    caller = frames(_over_the_bot(rate, prompt("vm-intro", rate)), rate)
    reference = frames(silence(BOT_LEAD_MS, rate) + bot_speech(rate), rate)
    detector = TurnDetector(rate)
    detector.set_bot_speaking(True)
    started = time.perf_counter()
    for index, frame in enumerate(caller):
        if index < len(reference):
            detector.feed_reference(reference[index])
        detector.feed(frame)
    per_frame_us = (time.perf_counter() - started) / len(caller) * 1e6
    record_property("us_per_frame", round(per_frame_us, 1))
    print(f"{rate} Hz: {per_frame_us:.1f} µs per 20 ms frame")
    assert per_frame_us < 500  # a frame is 20 ms of audio: 500 µs would be 2.5 % of a core per call
