"""Recordings on a disk that refuses them, at CPU speed: a real store and real files, no service.

The disk refuses for real, without privileges: a directory where the WAV should go (refused as an
existing file, since a recording is never overwritten; the same retry path as EROFS or ENOSPC on a
read-only or full disk), a file where the call's raw-parts directory should be, and /dev/full (every
write: ENOSPC).
"""

from __future__ import annotations

import asyncio
import os
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from agent.records import recordings
from agent.records.record_writer import RecordWriter
from agent.records.recordings import GuardedRecording, RecordingFinisher
from agent.records.store import Store
from agent.worker import recovery
from agent.worker.recovery import finish_left_recordings
from pipelines.audio import CallRecording

RATE = 8000
CALLER = b"\x01\x00" * RATE  # a second of caller audio
BOT = b"\x02\x00" * (RATE // 2)


@pytest.fixture
def store(sqlite_store: Store) -> Store:
    return sqlite_store


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recordings, "RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(recordings, "RETRY_MAX_S", 0.2)


Failures = list[tuple[str, int]]
"""What a GuardedRecording reported: (error, caller sample it stopped at)."""


def recorded_call(rec: Path, call_id: str, seen: Failures) -> GuardedRecording:
    """A call's recording with a second of caller audio and half a second of the bot."""
    recording = GuardedRecording(rec / call_id, RATE, lambda error, at: seen.append((error, at)))
    recording.add_caller(CALLER)
    recording.add_bot(BOT, at_sample=0)
    return recording


async def ended_call(store: Store, call_id: str, **fields: Any) -> None:
    now = time.time()
    row = {"status": "completed", "started_at": now - 5, "ended_at": now, "sample_rate": RATE, **fields}
    await store.create_call(id=call_id, **row)


def block_the_wav(rec: Path, call_id: str) -> Path:
    """A directory where the call's WAV should go: writing it fails with an OSError, as on a full or
    read-only disk. Returns the blocker (remove it and the disk takes the WAV again)."""
    blocker = rec / f"{call_id}.wav"
    (blocker / "in-the-way").mkdir(parents=True)
    return blocker


def unblock(blocker: Path) -> None:
    (blocker / "in-the-way").rmdir()
    blocker.rmdir()


def wav_frames(path: Path) -> tuple[int, int]:
    with wave.open(str(path)) as w:
        return w.getnchannels(), w.getnframes()


async def until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def test_a_wav_the_disk_refuses_at_hang_up_is_retried_until_the_record_has_it(
    store: Store, tmp_path: Path
) -> None:
    """The disk refuses the WAV at hang-up: the record says why at once (`meta.recording_pending`, a
    `recording/pending` event), the raw parts stay, and once the disk takes files again a retry writes
    the WAV and the record gets its recording (`recording/saved` by retry)."""
    rec = tmp_path / "rec"
    await ended_call(store, "c_refused")
    writer = RecordWriter(store)
    finisher = RecordingFinisher(writer, rec)
    seen: Failures = []
    recording = recorded_call(rec, "c_refused", seen)
    blocker = block_the_wav(rec, "c_refused")

    assert await finisher.finish("c_refused", recording) is None
    assert (
        # A directory stands where the WAV goes: refused as an existing file (never overwritten).
        finisher.pending == 1 and finisher.failures == 1 and "FileExistsError" in str(finisher.last_error)
    )
    assert (rec / "c_refused" / "caller.raw").stat().st_size == len(CALLER)  # the audio is kept
    assert finisher.degraded() and "1 recordings not finished" in finisher.degraded()[0]
    record = await store.call_record("c_refused")
    assert record is not None and record["recording"] is None
    assert "FileExistsError" in record["meta"]["recording_pending"]["error"]
    assert [e["status"] for e in record["events"]] == ["pending"]

    await asyncio.sleep(0.3)  # a few retries fail too
    assert finisher.failures > 1 and "c_refused" in finisher.retrying
    unblock(blocker)

    async def saved() -> bool:
        r = await store.call_record("c_refused")
        return r is not None and r["recording"] is not None

    await until(saved, "the record got its recording")
    record = await store.call_record("c_refused")
    assert record is not None and "recording_pending" not in record["meta"]
    saved_event = [e for e in record["events"] if e["source"] == "recording"][-1]
    assert saved_event["status"] == "saved" and saved_event["payload"]["by"] == "retry"
    assert wav_frames(rec / "c_refused.wav") == (2, RATE)
    assert not (rec / "c_refused").exists() and finisher.pending == 0 and seen == []
    assert not list(rec.glob("*.partial"))  # failed attempts leave no half-written WAV behind
    assert await writer.flush(5) == 0


async def test_when_every_retry_fails_recovery_finishes_the_recording_later(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retries are bounded: after MAX_ATTEMPTS the raw parts are left for recovery (still counted
    as pending), whose next pass writes the WAV once the disk takes it."""
    monkeypatch.setattr(recordings, "MAX_ATTEMPTS", 3)
    rec = tmp_path / "rec"
    await ended_call(store, "c_stuck")
    writer = RecordWriter(store)
    finisher = RecordingFinisher(writer, rec)
    blocker = block_the_wav(rec, "c_stuck")
    assert await finisher.finish("c_stuck", recorded_call(rec, "c_stuck", [])) is None

    async def given_up() -> bool:
        return not finisher.retrying

    await until(given_up, "the retries given up")
    assert list(finisher.left) == ["c_stuck"] and finisher.pending == 1 and finisher.failures == 3
    assert (await finish_left_recordings(store, rec, finisher)).finished == []  # the disk still refuses
    assert finisher.pending == 1 and finisher.failures == 4

    unblock(blocker)
    assert (await finish_left_recordings(store, rec, finisher)).finished == ["c_stuck"]
    assert finisher.pending == 0
    record = await store.call_record("c_stuck")
    assert record is not None and record["recording"] is not None
    assert "recording_pending" not in record["meta"]
    assert [e["payload"].get("by") for e in record["events"]] == [None, "recovery"]
    assert wav_frames(rec / "c_stuck.wav") == (2, RATE)


async def test_after_a_restart_recovery_finishes_ended_calls_and_leaves_live_ones(
    store: Store, tmp_path: Path
) -> None:
    """A new process (a fresh finisher) finds raw parts of an ended call with no recording and finishes
    them; a call still active, parts written moments ago, and a call live in this process are left."""
    rec = tmp_path / "rec"
    for call_id in ("c_ended", "c_active", "c_fresh", "c_live_here"):
        parts = CallRecording(rec / call_id, RATE)
        parts.add_caller(CALLER)
        parts.close()
        if call_id != "c_fresh":
            old = time.time() - 600
            for name in ("caller.raw", "bot.raw"):
                os.utime(rec / call_id / name, (old, old))
    await ended_call(store, "c_ended", meta={"recording_pending": {"error": "OSError: disk full"}})
    await ended_call(store, "c_active", status="active", ended_at=None)
    await ended_call(store, "c_fresh")
    await ended_call(store, "c_live_here")
    writer = RecordWriter(store)
    finisher = RecordingFinisher(writer, rec)
    finisher.is_live = {"c_live_here"}.__contains__

    done = await finish_left_recordings(store, rec, finisher)
    assert done.finished == ["c_ended"] and done.waiting == ["c_fresh"]
    assert await writer.flush(5) == 0
    record = await store.call_record("c_ended")
    assert record is not None and record["recording"] is not None and record["meta"] == {}
    assert wav_frames(rec / "c_ended.wav") == (2, RATE)
    for call_id in ("c_active", "c_fresh", "c_live_here"):
        assert (rec / call_id / "caller.raw").exists()
        other = await store.call_record(call_id)
        assert other is not None and other["recording"] is None


async def test_parts_still_fresh_at_start_up_are_finished_once_quiet_not_a_round_later(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker restarted moments after its call ended finds the parts fresh and leaves them; the
    recovery loop comes back once they are quiet (it used to wait a whole RECOVERY_EVERY_S)."""
    monkeypatch.setattr(recovery, "FRESH_PARTS_S", 0.5)
    monkeypatch.setattr(recovery, "RECOVERY_EVERY_S", 3600.0)
    rec = tmp_path / "rec"
    parts = CallRecording(rec / "c_just_ended", RATE)
    parts.add_caller(CALLER)
    parts.close()
    await ended_call(store, "c_just_ended")
    writer = RecordWriter(store)
    finisher = RecordingFinisher(writer, rec)
    me = recovery.Incarnation("worker-a")
    loop = asyncio.create_task(recovery.recovery_loop(store, rec, me, None, alone=True, finisher=finisher))
    try:

        async def recorded() -> bool:
            await writer.flush(5)
            record = await store.call_record("c_just_ended")
            return record is not None and record["recording"] is not None

        await until(recorded, "the fresh parts finished once quiet")
    finally:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)


def test_a_recording_the_disk_refuses_mid_call_stops_and_the_call_goes_on(tmp_path: Path) -> None:
    """Every write fails (ENOSPC from /dev/full): the first failure is reported once, later audio is
    not written but still counted (it is the call's clock), and nothing raises into the call."""
    seen: Failures = []
    recording = recorded_call(tmp_path, "c_full", seen)
    assert recording.parts is not None and recording.parts._caller is not None
    recording.parts._caller.close()
    recording.parts._caller = open("/dev/full", "ab")  # the disk is full from now on
    recording.add_caller(CALLER)
    recording.add_caller(CALLER)
    recording.add_bot(BOT)
    recording.cut_bot(100)
    assert len(seen) == 1 and "No space left on device" in seen[0][0] and seen[0][1] == 2 * RATE
    assert recording.caller_samples == 3 * RATE
    assert recording.failure is not None and recording.failed_at == 2 * RATE


async def test_a_recordings_folder_that_cannot_hold_the_call_leaves_it_unrecorded(
    store: Store, tmp_path: Path
) -> None:
    """A file where the call's raw-parts directory should be: the call is not recorded, says so once,
    and its hang-up asks nothing of the disk."""
    (tmp_path / "c_nodir").write_bytes(b"")
    seen: Failures = []
    recording = GuardedRecording(tmp_path / "c_nodir", RATE, lambda error, at: seen.append((error, at)))
    recording.add_caller(CALLER)
    assert recording.parts is None and len(seen) == 1 and recording.caller_samples == RATE
    finisher = RecordingFinisher(RecordWriter(store), tmp_path)
    assert await finisher.finish("c_nodir", recording) is None and finisher.pending == 0
