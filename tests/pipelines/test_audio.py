"""PCM helpers, reframing, resampling, WAV files and the two-channel call recording."""

from __future__ import annotations

import itertools
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.audio import (
    SILENCE_DBFS,
    CallRecording,
    Reframer,
    StreamResampler,
    float_to_pcm16,
    pcm16_to_float,
    read_wav,
    resample,
    rms_dbfs,
    write_wav,
)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return float_to_pcm16(amplitude * np.sin(2 * np.pi * freq * t))


def samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def test_pcm_float_round_trip_and_clipping() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768, 1234], dtype="<i2").tobytes()
    x = pcm16_to_float(pcm)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() < 1.0
    assert float_to_pcm16(x) == pcm
    assert samples(float_to_pcm16([2.0, -2.0, 0.5])).tolist() == [32767, -32768, 16384]


def test_pcm_rejects_half_samples() -> None:
    with pytest.raises(ValueError, match="whole number"):
        pcm16_to_float(b"\x00\x01\x02")


def test_reframer_carries_remainder_including_odd_byte() -> None:
    framer = Reframer(8000)  # 20 ms = 160 samples = 320 bytes
    assert framer.frame_bytes == 320
    assert framer.feed(b"\x01" * 319) == []
    frames = framer.feed(b"\x02" * 322)  # 641 bytes in total: two frames and one odd byte left
    assert [len(f) for f in frames] == [320, 320]
    assert frames[0] == b"\x01" * 319 + b"\x02"
    assert framer.pending_bytes == 1
    assert framer.flush() == b"\x02"
    assert framer.flush() == b""


def test_reframer_rejects_fractional_frames() -> None:
    with pytest.raises(ValueError):
        Reframer(22050, frame_ms=10)  # 220.5 samples


@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    rate=st.sampled_from([8000, 16000]),
    frame_ms=st.sampled_from([10, 20, 30]),
)
def test_reframer_reassembles_any_split_exactly(
    data: bytes, cuts: list[int], rate: int, frame_ms: int
) -> None:
    framer = Reframer(rate, frame_ms)
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    frames: list[bytes] = []
    for start, end in itertools.pairwise(bounds):
        frames += framer.feed(data[start:end])
    assert all(len(f) == framer.frame_bytes for f in frames)
    assert len(frames) == len(data) // framer.frame_bytes
    assert b"".join(frames) + framer.flush() == data


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(22050, 8000), (8000, 16000), (48000, 16000), (16000, 16000)]
)
def test_resample_length_and_pitch(in_rate: int, out_rate: int) -> None:
    out = resample(tone(440, 1.0, in_rate), in_rate, out_rate)
    y = samples(out).astype(np.float64)
    assert abs(len(y) - out_rate) <= out_rate * 0.01
    # The tone survives: its spectral peak is still at 440 Hz (1 Hz bins for a 1 s clip).
    assert abs(int(np.argmax(np.abs(np.fft.rfft(y)))) * out_rate / len(y) - 440) <= 2


def test_resample_rejects_unsupported_rate() -> None:
    with pytest.raises(ValueError, match="11025"):
        resample(b"\x00\x00" * 10, 11025, 8000)


def test_stream_resampler_matches_expected_length_with_odd_chunks() -> None:
    pcm = tone(300, 2.0, 22050)
    stream = StreamResampler(22050, 8000)
    out = b""
    for start in range(0, len(pcm), 333):  # odd chunk sizes split samples across calls
        out += stream.process(pcm[start : start + 333])
    out += stream.flush()
    assert abs(len(out) // 2 - 16000) <= 160
    assert abs(rms_dbfs(out) - rms_dbfs(pcm)) < 0.5


def test_rms_dbfs() -> None:
    assert rms_dbfs(tone(1000, 0.5, 16000, amplitude=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert rms_dbfs(tone(1000, 0.5, 16000, amplitude=0.1)) == pytest.approx(-23.01, abs=0.05)
    assert rms_dbfs(bytes(320)) == SILENCE_DBFS
    assert rms_dbfs(b"") == SILENCE_DBFS


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = tone(440, 0.25, 16000)
    write_wav(tmp_path / "a.wav", pcm, 16000)
    assert read_wav(tmp_path / "a.wav") == (pcm, 16000)


def test_read_wav_mixes_stereo_to_mono(tmp_path: Path) -> None:
    stereo = np.array([[1000, 3000], [-2000, 0], [32767, 32767]], dtype="<i2")
    write_wav(tmp_path / "s.wav", stereo.tobytes(), 8000, channels=2)
    pcm, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000
    assert samples(pcm).tolist() == [2000, -1000, 32767]


def test_read_wav_accepts_8_bit(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "u8.wav"), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(bytes([128, 255, 0]))
    pcm, _ = read_wav(tmp_path / "u8.wav")
    assert samples(pcm).tolist() == [0, 127 * 256, -32768]


def test_read_wav_rejects_unsupported_formats(tmp_path: Path) -> None:
    (tmp_path / "junk.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match=r"junk\.wav.*accepted"):
        read_wav(tmp_path / "junk.wav")
    # A 32-bit float WAV (format tag 3), as many editors write by default.
    data = np.zeros(4, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "float.wav").write_bytes(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    with pytest.raises(ValueError, match=r"float\.wav"):
        read_wav(tmp_path / "float.wav")


def read_stereo(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getsampwidth() == 2
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
        return frames, wav.getframerate()


def test_call_recording_aligns_bot_audio_on_caller_timeline(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path / "call", 8000)
    rec.add_caller(np.full(800, 100, dtype="<i2").tobytes())
    assert rec.caller_samples == 800
    assert rec.add_bot(np.full(200, 7, dtype="<i2").tobytes(), at_sample=300) == 300
    # Asked to start earlier than the bot channel's end: it follows on, never overwriting.
    assert rec.add_bot(np.full(100, 9, dtype="<i2").tobytes(), at_sample=400) == 500
    assert rec.add_bot(np.full(50, 5, dtype="<i2").tobytes()) == 800  # default: the caller's position
    rec.add_caller(np.full(100, 200, dtype="<i2").tobytes())

    out = rec.finalize(tmp_path / "call.wav")
    frames, rate = read_stereo(out)
    assert rate == 8000
    assert len(frames) == 900
    left, right = frames[:, 0], frames[:, 1]
    assert (left[:800] == 100).all() and (left[800:] == 200).all()
    assert (right[:300] == 0).all()
    assert (right[300:500] == 7).all() and (right[500:600] == 9).all()
    assert (right[600:800] == 0).all() and (right[800:850] == 5).all() and (right[850:] == 0).all()
    assert not (tmp_path / "call" / "caller.raw").exists()
    assert not (tmp_path / "call" / "bot.raw").exists()
    assert rec.finalize(tmp_path / "elsewhere.wav") == out  # idempotent
    with pytest.raises(RuntimeError):
        rec.add_caller(b"\x00\x00")


def test_call_recording_with_one_side_empty(tmp_path: Path) -> None:
    bot_only = CallRecording(tmp_path / "a", 16000)
    bot_only.add_bot(np.full(10, 3, dtype="<i2").tobytes(), at_sample=5)
    frames, _ = read_stereo(bot_only.finalize(tmp_path / "a.wav"))
    assert frames[:, 0].tolist() == [0] * 15
    assert frames[:, 1].tolist() == [0] * 5 + [3] * 10

    silent = CallRecording(tmp_path / "b", 16000)
    frames, _ = read_stereo(silent.finalize(tmp_path / "b.wav"))
    assert len(frames) == 0


def test_call_recording_carries_odd_caller_bytes(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path / "c", 8000)
    pcm = np.arange(10, dtype="<i2").tobytes()
    rec.add_caller(pcm[:3])
    rec.add_caller(pcm[3:])
    assert rec.caller_samples == 10
    frames, _ = read_stereo(rec.finalize(tmp_path / "c.wav"))
    assert frames[:, 0].tolist() == list(range(10))


def test_call_recording_recovers_after_crash(tmp_path: Path) -> None:
    directory = tmp_path / "crashed"
    rec = CallRecording(directory, 8000)
    rec.add_caller(np.full(400, 11, dtype="<i2").tobytes())
    rec.add_bot(np.full(100, 22, dtype="<i2").tobytes(), at_sample=100)
    # The process dies here: nothing is finalized or closed, and a half sample was being written.
    with open(directory / "caller.raw", "ab") as part:
        part.write(b"\x01")
    with pytest.raises(FileExistsError):
        CallRecording(directory, 8000)  # a new call must not append to the leftovers

    recovered = CallRecording.recover(directory, 8000)
    assert recovered.caller_samples == 400
    assert recovered.bot_samples == 200
    frames, _ = read_stereo(recovered.finalize(tmp_path / "crashed.wav"))
    assert len(frames) == 400
    assert (frames[:, 0] == 11).all()
    assert frames[:, 1].tolist() == [0] * 100 + [22] * 100 + [0] * 200
    with pytest.raises(FileNotFoundError):
        CallRecording.recover(directory, 8000)  # nothing left: recovering must not clobber the WAV


def test_call_recording_finalizes_long_calls_in_chunks(tmp_path: Path) -> None:
    rec = CallRecording(tmp_path / "long", 8000)
    caller = np.arange(200_000, dtype=np.int64).astype("<i2")  # more than one interleaving chunk
    rec.add_caller(caller.tobytes())
    rec.add_bot(caller[::-1].tobytes(), at_sample=0)
    frames, _ = read_stereo(rec.finalize(tmp_path / "long.wav"))
    assert np.array_equal(frames[:, 0], caller)
    assert np.array_equal(frames[:, 1], caller[::-1])


def test_cut_bot_drops_unheard_audio_and_later_audio_follows(tmp_path: Path) -> None:
    from pipelines.audio import CallRecording

    rec = CallRecording(tmp_path / "r", 8000)
    rec.add_caller(bytes(2 * 8000))
    rec.add_bot(b"\x10\x00" * 4000, at_sample=1000)
    rec.cut_bot(2000)  # only 1000 samples were heard
    assert rec.bot_samples == 2000
    rec.add_bot(b"\x20\x00" * 10, at_sample=3000)
    out = rec.finalize(tmp_path / "r.wav")
    import wave as _wave

    with _wave.open(str(out)) as w:
        frames = w.readframes(w.getnframes())
    bot = frames[2::4]  # low byte of each right-channel sample
    assert set(bot[1000:2000]) == {0x10} and set(bot[2000:3000]) == {0} and set(bot[3000:3010]) == {0x20}


def test_a_recording_is_never_overwritten(tmp_path: Path) -> None:
    """A second recording of the same call (a replayed stream) cannot replace the first one's WAV; its
    own audio stays in its raw parts."""
    first = CallRecording(tmp_path / "c_1", 8000)
    first.add_caller(np.full(800, 11, dtype="<i2").tobytes())
    wav = first.finalize(tmp_path / "c_1.wav")
    kept = wav.read_bytes()
    second = CallRecording(tmp_path / "c_1", 8000)
    second.add_caller(np.full(800, 22, dtype="<i2").tobytes())
    with pytest.raises(FileExistsError, match="never overwritten"):
        second.finalize(tmp_path / "c_1.wav")
    assert wav.read_bytes() == kept
    assert (tmp_path / "c_1" / "caller.raw").stat().st_size == 1600
