"""Frame-level decisions: webrtcvad on 20 ms frames, frame levels, the noise floor, the echo guard."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.audio import SILENCE_DBFS, rms_dbfs
from pipelines.vad import EchoGuard, NoiseFloor, SustainedSpeech, Vad, frame_bytes, frame_dbfs
from tests.pipelines.speech import (
    bot_speech,
    delay,
    frames,
    gain,
    line_noise,
    mix,
    prompt,
    silence,
)


@pytest.mark.parametrize(("rate", "size"), [(8000, 320), (16000, 640), (32000, 1280)])
def test_frames_are_20_ms(rate: int, size: int) -> None:
    assert frame_bytes(rate) == size
    assert Vad(rate).frame_bytes == size


@pytest.mark.parametrize("rate", [11025, 22050, 24000, 44100, 48000, 0])
def test_unsupported_rates_are_refused_clearly(rate: int) -> None:
    with pytest.raises(ValueError, match=r"not supported .* use one of \(8000, 16000, 32000\)"):
        Vad(rate)
    with pytest.raises(ValueError, match="not supported"):
        EchoGuard(rate)


@pytest.mark.parametrize("aggressiveness", [-1, 4])
def test_aggressiveness_is_checked(aggressiveness: int) -> None:
    with pytest.raises(ValueError, match="aggressiveness"):
        Vad(8000, aggressiveness)


@pytest.mark.parametrize(("rate", "size"), [(8000, 318), (8000, 480), (16000, 320), (16000, 0), (32000, 641)])
def test_frames_of_the_wrong_size_are_refused(rate: int, size: int) -> None:
    vad, guard = Vad(rate), EchoGuard(rate)
    with pytest.raises(ValueError, match=rf"{size} bytes; expected exactly {frame_bytes(rate)} bytes"):
        vad.is_speech(bytes(size))
    with pytest.raises(ValueError, match="reference frame"):
        guard.add_reference(bytes(size))
    with pytest.raises(ValueError, match="caller frame"):
        guard.add_caller(bytes(size))


@pytest.mark.parametrize("rate", [8000, 16000, 32000])
def test_vad_hears_speech_not_silence(rate: int) -> None:
    vad = Vad(rate)
    speech = frames(prompt("agent-pass", rate), rate)
    voiced = sum(vad.is_speech(f) for f in speech)
    assert voiced >= 0.8 * len(speech)
    fresh = Vad(rate)  # webrtcvad lingers on "speech" for a few frames after speech
    assert not any(fresh.is_speech(f) for f in frames(silence(1000, rate), rate))


def test_frame_dbfs_matches_rms_dbfs() -> None:
    rng = np.random.default_rng(3)
    t = np.arange(160) / 8000
    cases = [
        bytes(320),
        (np.sin(2 * np.pi * 400 * t) * 32767).astype("<i2").tobytes(),
        rng.normal(0, 300, 160).astype("<i2").tobytes(),
        np.full(160, 1, dtype="<i2").tobytes(),
        *frames(prompt("vm-goodbye"), 8000),
    ]
    for frame in cases:
        assert frame_dbfs(frame) == pytest.approx(rms_dbfs(frame), abs=0.01)
    assert frame_dbfs(bytes(320)) == SILENCE_DBFS
    assert frame_dbfs(b"") == SILENCE_DBFS


@pytest.mark.parametrize(
    ("levels", "expected"),
    [
        ([-30.0], -30.0),
        ([-41.0, -40.5, -41.5, -40.0], -41.5),  # steady noise is found from the first frames
        ([-60.0] + [-20.0] * 99, -60.0),  # a dip within the last 2 s holds
        ([-60.0] + [-20.0] * 100, -20.0),  # ... and is forgotten after them
        ([-60.0, -20.0, -45.0, -30.0] + [-25.0] * 98, -45.0),
    ],
)
def test_noise_floor_is_the_quietest_recent_frame(levels: list[float], expected: float) -> None:
    floor = NoiseFloor()
    for level in levels:
        result = floor.update(level)
    assert result == expected


def _echo_verdicts(rate: int, caller: bytes, reference: bytes, *, ahead_frames: int = 0) -> list[bool]:
    """Echo verdicts on the caller frames that are loud enough to matter (> -50 dBFS)."""
    guard = EchoGuard(rate)
    ref = frames(reference, rate)
    for frame in ref[:ahead_frames]:
        guard.add_reference(frame)
    verdicts = []
    for i, frame in enumerate(frames(caller, rate)):
        if i + ahead_frames < len(ref):
            guard.add_reference(ref[i + ahead_frames])
        guard.add_caller(frame)
        if frame_dbfs(frame) > -50:
            verdicts.append(guard.check().echo)
    return verdicts


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("delay_ms", "loss_db"),
    [(0, 20), (40, 20), (60, 20), (20, 10), (40, 6), (60, 6)],
)
def test_echo_of_the_bot_is_recognised(rate: int, delay_ms: int, loss_db: int) -> None:
    # At 20 dB the level alone tells; -6 dB is a hot line where only the correlation does.
    bot = bot_speech(rate)
    verdicts = _echo_verdicts(rate, gain(delay(bot, delay_ms, rate), -loss_db), bot)
    assert len(verdicts) > 50
    assert all(verdicts)


def test_reference_fed_ahead_of_the_echo_is_matched() -> None:
    bot = bot_speech(8000)
    verdicts = _echo_verdicts(8000, gain(bot, -6), bot, ahead_frames=2)  # echo 40 ms "early"
    assert all(verdicts)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_caller_speech_over_the_bot_is_not_echo(rate: int) -> None:
    bot = bot_speech(rate)
    human = prompt("agent-pass", rate) + prompt("vm-intro", rate)
    caller = mix(gain(delay(bot, 40, rate), -20), human)
    guard = EchoGuard(rate)
    checked = not_echo = 0
    for ref, frame, alone in zip(frames(bot, rate), frames(caller, rate), frames(human, rate), strict=False):
        guard.add_reference(ref)
        guard.add_caller(frame)
        if frame_dbfs(alone) > -25:  # the caller's clearly voiced frames
            checked += 1
            not_echo += not guard.check().echo
    assert checked > 100
    assert not_echo >= 0.9 * checked


def test_without_reference_nothing_is_echo() -> None:
    rate = 8000
    guard = EchoGuard(rate)
    for frame in frames(prompt("agent-pass", rate), rate):
        guard.add_caller(frame)
        check = guard.check()
        assert not check.echo
        assert check.relative_db is None


def test_echo_check_reports_its_numbers() -> None:
    rate = 8000
    bot = bot_speech(rate)
    guard = EchoGuard(rate)
    loud = []
    for index, (ref, frame) in enumerate(zip(frames(bot, rate), frames(gain(bot, -6), rate), strict=True)):
        guard.add_reference(ref)
        guard.add_caller(frame)
        check = guard.check()
        assert check.echo or check.relative_db is None  # None: the bot is silent here
        if index > 50 and frame_dbfs(ref) > -20:  # the echo's delay is learnt by now
            loud.append(check)
    assert len(loud) > 20
    assert float(np.median([c.relative_db for c in loud if c.relative_db is not None])) == pytest.approx(
        -6.0, abs=0.5
    )
    assert min(c.correlation or 0.0 for c in loud) > 0.95


def test_line_noise_alone_is_not_echo() -> None:
    rate = 8000
    guard = EchoGuard(rate)
    for frame in frames(line_noise(2.0, rate), rate):
        guard.add_caller(frame)
        assert not guard.check().echo


def test_echo_threshold_follows_the_measured_echo_level() -> None:
    # Until the line's echo is measured, frames 10 dB under the bot are echo; once it is known to come
    # back 20 dB down, a caller 12 dB under the bot is heard (6 dB of double-talk margin above the echo).
    rate = 8000
    bot = bot_speech(rate)
    guard = EchoGuard(rate)
    assert guard.threshold_db == -10.0
    for ref, frame in zip(frames(bot, rate), frames(gain(delay(bot, 40, rate), -20), rate), strict=False):
        guard.add_reference(ref)
        guard.add_caller(frame)
        guard.check()
    assert guard.threshold_db == pytest.approx(-14.0, abs=1.0)


@pytest.mark.parametrize(
    ("pattern", "fires_at", "onset"),
    [
        ("11111111", 7, 0),  # 8 frames of speech
        ("1111111", None, None),  # 7 are not enough
        ("0011110011110", 11, 2),  # a 2-frame gap neither breaks nor counts
        ("1111000000111111110", 17, 10),  # a 6-frame gap starts over
        ("1010101010101010", 14, 0),  # flicker adds up while the gaps are short
        ("111111111111111111", 7, 0),  # fires once
    ],
)
def test_sustained_speech(pattern: str, fires_at: int | None, onset: int | None) -> None:
    run = SustainedSpeech(need=8, max_gap=5)
    fired = [(i, o) for i, c in enumerate(pattern) if (o := run.update(c == "1", i)) is not None]
    assert fired == ([] if fires_at is None else [(fires_at, onset)])


def test_echo_check_survives_a_silent_reference_after_speech() -> None:
    # Regression: the bot spoke, then its reference went silent inside the lag window (a pause between
    # clauses, or a cut): the expected echo power was 0 and check() divided by it.
    from pipelines.vad import EchoGuard

    guard = EchoGuard(8000)
    loud = (np.sin(np.arange(160) / 3) * 8000).astype("<i2").tobytes()
    for _ in range(10):
        guard.add_reference(loud)
        guard.add_caller(loud)
        guard.check()
    for _ in range(10):
        guard.add_reference(bytes(320))
        guard.add_caller(loud)
        assert guard.check().echo is False
