"""PCM helpers: int16 ⇄ float, reframing, resampling (soxr), WAV files, levels, and the call recording.

All PCM here is signed 16-bit little-endian ("int16"), mono unless a name says otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os
import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soxr

SUPPORTED_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Sample rates accepted by `resample` and `StreamResampler`: telephony, ASR and TTS voice rates."""

SILENCE_DBFS = -100.0
"""What `rms_dbfs` reports for digital silence; below the level of one LSB (≈ -90 dBFS), and finite so
it survives JSON and arithmetic."""

_INT16_SCALE = 32768.0


def _check_whole_samples(pcm: bytes, what: str) -> None:
    if len(pcm) % 2:
        raise ValueError(f"{what}: {len(pcm)} bytes is not a whole number of 16-bit samples")


def _as_int16(pcm: bytes) -> npt.NDArray[np.int16]:
    _check_whole_samples(pcm, "PCM")
    return np.frombuffer(pcm, dtype="<i2")


def pcm16_to_float(pcm: bytes) -> npt.NDArray[np.float32]:
    """Convert int16 PCM to float32 samples in [-1, 1)."""
    return _as_int16(pcm).astype(np.float32) / np.float32(_INT16_SCALE)


def float_to_pcm16(x: npt.ArrayLike) -> bytes:
    """Convert float samples (nominally [-1, 1]) to int16 PCM, clipping anything out of range."""
    scaled = np.asarray(x, dtype=np.float32) * np.float32(_INT16_SCALE)
    return np.clip(np.round(scaled), -32768, 32767).astype("<i2").tobytes()


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of int16 PCM in dBFS (a full-scale sine is about -3 dBFS); `SILENCE_DBFS` for silence."""
    samples = _as_int16(pcm).astype(np.float64)
    if samples.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(samples * samples)))
    if rms == 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / _INT16_SCALE))


class Reframer:
    """Cuts a byte stream of arbitrary chunk sizes into fixed-duration int16 frames (20 ms by default).

    Carriers send chunks of any length, even odd byte counts; VAD needs exact 10/20/30 ms frames.
    """

    def __init__(self, sample_rate: int, frame_ms: int = 20) -> None:
        samples = sample_rate * frame_ms // 1000
        if samples <= 0 or sample_rate * frame_ms % 1000:
            raise ValueError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_bytes = samples * 2
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return every complete frame now available. The remainder waits for the next call."""
        self._buffer += data
        size = self.frame_bytes
        count = len(self._buffer) // size
        if count == 0:
            return []
        frames = [bytes(self._buffer[i * size : (i + 1) * size]) for i in range(count)]
        del self._buffer[: count * size]
        return frames

    def flush(self) -> bytes:
        """Return and forget the incomplete remainder (shorter than a frame, possibly an odd byte count)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def pending_bytes(self) -> int:
        """Bytes held back until a frame is complete."""
        return len(self._buffer)


def _check_rate(rate: int) -> None:
    if rate not in SUPPORTED_RATES:
        raise ValueError(f"sample rate {rate} Hz is not supported; use one of {SUPPORTED_RATES}")


def resample(pcm: bytes, in_rate: int, out_rate: int) -> bytes:
    """Resample a complete int16 mono clip (one shot, soxr high quality)."""
    _check_rate(in_rate)
    _check_rate(out_rate)
    samples = _as_int16(pcm)
    if in_rate == out_rate or samples.size == 0:
        return bytes(pcm)
    # soxr clips int16 output itself, so overshoot near full scale cannot wrap around.
    out: npt.NDArray[np.int16] = soxr.resample(samples, in_rate, out_rate, quality="HQ")
    return out.astype("<i2").tobytes()


class StreamResampler:
    """Resamples an int16 mono stream chunk by chunk, keeping filter state across chunks (soxr stream)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        _check_rate(in_rate)
        _check_rate(out_rate)
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality="HQ")
        # An odd byte waits here for its partner, so chunk boundaries never shift the sample grid.
        self._odd = b""

    def process(self, pcm: bytes) -> bytes:
        """Feed a chunk; return the output available so far (soxr holds back its filter delay)."""
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        if self.in_rate == self.out_rate:
            return data[:cut]
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(np.frombuffer(data[:cut], dtype="<i2"))
        return out.astype("<i2").tobytes()

    def flush(self) -> bytes:
        """End the stream and return the held-back tail; the resampler is ready for a new stream after."""
        self._odd = b""
        if self.in_rate == self.out_rate:
            return b""
        out: npt.NDArray[np.int16] = self._stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        self._stream.clear()
        return out.astype("<i2").tobytes()


def read_wav(path: str | os.PathLike[str]) -> tuple[bytes, int]:
    """Read an integer PCM WAV file (8, 16, 24 or 32 bit, any channel count) as int16 mono + rate.

    Multi-channel audio is averaged down to mono. Float, compressed and extensible-format WAVs raise
    ValueError: convert them to 16-bit PCM first.
    """
    try:
        with wave.open(os.fspath(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(
            f"{path}: not a readable integer PCM WAV file ({exc}); accepted: 8/16/24/32-bit PCM"
        ) from exc
    if width == 1:  # 8-bit WAV is unsigned with 128 as zero
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 24
    elif width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int32) << 16
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        samples = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)
    elif width == 4:
        samples = np.frombuffer(raw, dtype="<i4").astype(np.int32)
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples are not supported; accepted: 8/16/24/32-bit PCM")
    frames = samples.reshape(-1, channels).astype(np.float64)
    mono = frames.mean(axis=1) / 65536.0
    return np.clip(np.round(mono), -32768, 32767).astype("<i2").tobytes(), rate


def write_wav(path: str | os.PathLike[str], pcm: bytes, rate: int, channels: int = 1) -> None:
    """Write int16 PCM (interleaved if `channels` > 1) as a WAV file."""
    _check_whole_samples(pcm, "WAV data")
    if len(pcm) % (2 * channels):
        raise ValueError(f"WAV data: {len(pcm)} bytes is not a whole number of {channels}-channel frames")
    with wave.open(os.fspath(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)


class CallRecording:
    """One call's two-channel recording: caller on the left, bot on the right, time-aligned.

    Both sides are appended to raw int16 files (`caller.raw`, `bot.raw`) in `directory` as audio
    arrives, so a crashed process loses nothing already added; `recover` + `finalize` turns leftover
    parts into the WAV later. The caller stream is the clock: bot audio is placed on the caller's
    sample timeline. Not thread-safe: use it from the call's own task.
    """

    CALLER_PART = "caller.raw"
    BOT_PART = "bot.raw"
    _CHUNK_SAMPLES = 1 << 16  # bounds memory while padding and interleaving long calls

    def __init__(self, directory: Path, sample_rate: int) -> None:
        self._open(Path(directory), sample_rate, resume=False)

    @classmethod
    def recover(cls, directory: Path, sample_rate: int) -> CallRecording:
        """Reopen the raw parts a crashed call left in `directory` (one missing part counts as empty)."""
        directory = Path(directory)
        if not any((directory / name).exists() for name in (cls.CALLER_PART, cls.BOT_PART)):
            # Without this, recovering a finalized call would overwrite its WAV with an empty one.
            raise FileNotFoundError(f"no {cls.CALLER_PART} or {cls.BOT_PART} to recover in {directory}")
        recording = cls.__new__(cls)
        recording._open(directory, sample_rate, resume=True)
        return recording

    def _open(self, directory: Path, sample_rate: int, *, resume: bool) -> None:
        self.directory = directory
        self.sample_rate = sample_rate
        directory.mkdir(parents=True, exist_ok=True)
        parts = [directory / self.CALLER_PART, directory / self.BOT_PART]
        if not resume and any(p.exists() for p in parts):
            # A fresh recording never appends to another call's leftovers; `recover` resumes them.
            raise FileExistsError(f"{directory} already holds raw recording parts; use CallRecording.recover")
        self._caller: BinaryIO | None = open(parts[0], "ab")
        self._bot: BinaryIO | None = open(parts[1], "ab")
        self._caller_samples = self._trim_to_samples(self._caller)
        self._bot_samples = self._trim_to_samples(self._bot)
        self._caller_odd = b""
        self._final: Path | None = None

    @staticmethod
    def _trim_to_samples(part: BinaryIO) -> int:
        # A crash mid-write can leave half a sample; drop it so both channels stay on the sample grid.
        size = part.seek(0, os.SEEK_END)
        if size % 2:
            part.truncate(size - 1)
        return size // 2

    @property
    def caller_samples(self) -> int:
        """Caller samples recorded so far: the current position on the call's timeline."""
        return self._caller_samples

    @property
    def bot_samples(self) -> int:
        """End of the bot channel on the caller timeline (silence padding included)."""
        return self._bot_samples

    def _open_part(self, part: BinaryIO | None) -> BinaryIO:
        if part is None:
            raise RuntimeError(f"recording in {self.directory} is already finalized or closed")
        return part

    def add_caller(self, pcm: bytes) -> None:
        """Append caller audio; an odd trailing byte is held until the next chunk completes it."""
        part = self._open_part(self._caller)
        data = self._caller_odd + pcm
        cut = len(data) - len(data) % 2
        self._caller_odd = data[cut:]
        part.write(data[:cut])
        part.flush()  # into the OS now, so a process crash keeps it
        self._caller_samples += cut // 2

    def add_bot(self, pcm: bytes, at_sample: int | None = None) -> int:
        """Place bot audio at `at_sample` of the caller timeline (default: the caller's current position).

        Bot audio never overwrites earlier bot audio: if the channel already extends past the requested
        position, the new audio starts where it ends. Gaps are filled with silence. Returns the sample
        position where the audio was placed.
        """
        part = self._open_part(self._bot)
        _check_whole_samples(pcm, "bot audio")
        wanted = self._caller_samples if at_sample is None else at_sample
        if wanted < 0:
            raise ValueError(f"at_sample must be >= 0, got {wanted}")
        gap = wanted - self._bot_samples
        while gap > 0:
            step = min(gap, self._CHUNK_SAMPLES)
            part.write(bytes(2 * step))
            gap -= step
        start = max(wanted, self._bot_samples)
        part.write(pcm)
        part.flush()
        self._bot_samples = start + len(pcm) // 2
        return start

    def cut_bot(self, at_sample: int) -> None:
        """Drop bot audio from `at_sample` on: sent to the line but cut by `break`, never heard."""
        part = self._open_part(self._bot)
        keep = max(0, min(at_sample, self._bot_samples))
        part.flush()
        part.truncate(keep * 2)
        part.seek(keep * 2)
        self._bot_samples = keep

    def close(self) -> None:
        """Close the raw parts without finalizing (they stay on disk for `recover`)."""
        for part in (self._caller, self._bot):
            if part is not None:
                part.close()
        self._caller = self._bot = None

    def finalize(self, path: Path) -> Path:
        """Write the stereo 16-bit WAV to `path`, remove the raw parts, and return the WAV's path.

        Streams in chunks, so memory stays small however long the call was. Calling it again returns
        the first result without doing anything. An existing file at `path` is never replaced
        (FileExistsError, the raw parts kept): it is another recording of the same call.
        """
        if self._final is not None:
            return self._final
        self.close()
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} exists: a recording is never overwritten")
        path.parent.mkdir(parents=True, exist_ok=True)
        caller_path, bot_path = self.directory / self.CALLER_PART, self.directory / self.BOT_PART
        total = max(self._caller_samples, self._bot_samples)
        # Written under a temporary name of its own (two processes may finish the same parts), then
        # renamed: a crash or a full disk here leaves the raw parts intact for another try.
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{id(self):x}.partial")
        try:
            # The file is opened first: wave.open on a path it cannot create leaves a broken object.
            with (
                open(caller_path, "rb") as left,
                open(bot_path, "rb") as right,
                open(tmp, "wb") as out,
                wave.open(out, "wb") as wav,
            ):
                wav.setnchannels(2)
                wav.setsampwidth(2)
                wav.setframerate(self.sample_rate)
                done = 0
                while done < total:
                    n = min(self._CHUNK_SAMPLES, total - done)
                    frames = np.zeros((n, 2), dtype="<i2")
                    for channel, source in enumerate((left, right)):
                        chunk = np.frombuffer(source.read(2 * n), dtype="<i2")
                        frames[: chunk.size, channel] = chunk
                    wav.writeframes(frames.tobytes())
                    done += n
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        caller_path.unlink(missing_ok=True)
        bot_path.unlink(missing_ok=True)
        self._final = path
        return path
