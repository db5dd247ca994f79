"""Call recordings on a disk that may fail: the call goes on, the raw parts are kept, the WAV comes later.

A full or read-only disk must cost a recording time, never a call or the worker. During a call,
`GuardedRecording` reports the first failure to write the raw parts (`recordings/<call id>/*.raw`) and
the call goes on, its audio unrecorded from there. At hang-up, `RecordingFinisher` turns the raw parts
into the call's WAV; when the disk refuses, the record says so (`meta.recording_pending`, a
`recording/pending` event) and the WAV is tried again with backoff (RETRY_FIRST_S doubling to
RETRY_MAX_S, MAX_ATTEMPTS in all). After that, or after a restart, recovery (agent/worker/recovery.py) finds
the raw parts of ended calls at start-up and every minute and finishes them. Either way the record gets
its recording (and a `recording/saved` event) through the call's lane of record writes, so nothing is
lost while the store, too, is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.records.record_json import iso
from agent.records.record_writer import RecordWriter
from pipelines.audio import CallRecording

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0
MAX_ATTEMPTS = 8
"""Attempts at hang-up and after (about 2 minutes in all); then recovery's periodic pass takes over."""
RECENT_FAILURE_S = 60.0
"""A failure to write a recording this recent still makes /healthz say `degraded`."""


def short_error(exc: BaseException) -> str:
    """An exception as one short line for records, logs and /healthz."""
    return f"{type(exc).__name__}: {exc}"[:200]


class GuardedRecording:
    """A call's CallRecording whose disk failures are reported once and never raised: the call goes on.

    It keeps counting caller samples after a failure (they are the call's clock) and stops writing.
    """

    def __init__(self, directory: Path, sample_rate: int, on_failure: Callable[[str, int], None]) -> None:
        self.directory = directory
        self._on_failure = on_failure
        self.failure: str | None = None
        """Why the recording stopped (None: it is complete so far)."""
        self.failed_at = 0
        """Where on the caller timeline (samples) it stopped."""
        self._unwritten = 0  # caller samples that arrived after the failure
        self.parts: CallRecording | None = None
        try:
            self.parts = CallRecording(directory, sample_rate)
        except OSError as exc:
            self._failed(exc)

    @property
    def caller_samples(self) -> int:
        """Caller samples so far, written or not: the position on the call's timeline."""
        return (self.parts.caller_samples if self.parts is not None else 0) + self._unwritten

    def add_caller(self, pcm: bytes) -> None:
        """Append caller audio (see CallRecording.add_caller)."""
        if self.parts is None or self.failure is not None:
            self._unwritten += len(pcm) // 2
            return
        try:
            self.parts.add_caller(pcm)
        except OSError as exc:
            self._unwritten += len(pcm) // 2
            self._failed(exc)

    def add_bot(self, pcm: bytes, at_sample: int | None = None) -> None:
        """Place bot audio on the caller timeline (see CallRecording.add_bot)."""
        if self.parts is None or self.failure is not None:
            return
        try:
            self.parts.add_bot(pcm, at_sample=at_sample)
        except OSError as exc:
            self._failed(exc)

    def cut_bot(self, at_sample: int) -> None:
        """Drop bot audio the caller never heard (see CallRecording.cut_bot)."""
        if self.parts is None or self.failure is not None:
            return
        try:
            self.parts.cut_bot(at_sample)
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        self.failure, self.failed_at = short_error(exc), self.caller_samples
        if self.parts is not None:
            with contextlib.suppress(OSError):
                self.parts.close()  # what was written so far stays for the WAV
        self._on_failure(self.failure, self.failed_at)


class RecordingFinisher:
    """Finishes ended calls' recordings: at hang-up, then retried while the disk refuses (see the module
    docstring). One per process; `pending` and `failures` feed /metrics, `degraded` /healthz."""

    def __init__(self, writer: RecordWriter, recordings_dir: Path) -> None:
        self.writer = writer
        self.recordings_dir = recordings_dir
        self.retrying: dict[str, asyncio.Task[None]] = {}
        """Calls whose WAV is being tried again."""
        self.left: dict[str, str] = {}
        """Calls whose WAV could not be written after every attempt (call id → last error): recovery's."""
        self.failures = 0
        """Attempts to write a WAV (or a call's raw parts) that failed."""
        self.last_error: str | None = None
        self.last_failure_at = -RECENT_FAILURE_S  # monotonic
        self.is_live: Callable[[str], bool] = lambda call_id: False
        """Whether a call is live in this process (its raw parts are still being written)."""

    @property
    def pending(self) -> int:
        """Ended calls whose recording is still in raw parts, as far as this process knows."""
        return len(self.retrying) + len(self.left)

    def busy(self, call_id: str) -> bool:
        """Whether this process is still writing or finishing the call's recording (recovery keeps off)."""
        return call_id in self.retrying or self.is_live(call_id)

    def write_failed(self, call_id: str, error: str) -> None:
        """A live call could not write its raw parts (counted; the call reports it itself)."""
        self._count_failure(error)

    async def finish(self, call_id: str, recording: GuardedRecording) -> str | None:
        """At hang-up: the path of the call's WAV, or None. When the disk refuses, the record is told
        (in the call's lane, before anything a retry writes) and the WAV is tried again in the
        background."""
        if recording.parts is None:
            return None  # nothing was ever recorded
        target = self.recordings_dir / f"{call_id}.wav"
        try:
            return str(await asyncio.to_thread(_finalize, recording.parts, target))
        except OSError as exc:
            error = self._attempt_failed(call_id, exc, 1)
        except Exception as exc:  # a bug, not the disk: left for recovery, never fatal to the call
            log.exception("call %s: could not finalize the recording", call_id)
            error = self._attempt_failed(call_id, exc, 1)
        pending = {"since": iso(time.time()), "error": error}
        await self.writer.write(
            call_id, lambda: self.writer.store.merge_call_meta(call_id, recording_pending=pending), "meta"
        )
        await self._event(call_id, "pending", {"error": error, "raw_parts": str(recording.directory)})
        task = asyncio.create_task(self._retry(call_id, recording.parts, target), name=f"recording {call_id}")
        self.retrying[call_id] = task
        return None

    async def saved(self, call_id: str, path: Path, by: str, attempts: int) -> None:
        """A WAV finished after its call ended (`by` a retry or recovery): into the call's record."""
        self.left.pop(call_id, None)
        if not self.left and not set(self.retrying) - {call_id}:
            self.last_failure_at = -RECENT_FAILURE_S  # the disk takes recordings again
        await self.writer.write(
            call_id, lambda: self.writer.store.set_recording(call_id, str(path)), "recording"
        )
        await self._event(call_id, "saved", {"by": by, "attempts": attempts, "path": path.name})
        log.warning("call %s: recording saved by %s after %d attempts", call_id, by, attempts)

    def left_for_recovery(self, call_id: str, error: str) -> None:
        """Recovery, too, could not finish it: counted until one of its next passes does."""
        self.left[call_id] = error
        self._count_failure(error)

    async def stop(self) -> None:
        """Cancel the retries (at shutdown): their raw parts stay for recovery at the next start."""
        for task in list(self.retrying.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def degraded(self) -> list[str]:
        """Why recordings are at risk now (for /healthz); empty when they are fine."""
        reasons = []
        if not os.access(self.recordings_dir, os.W_OK):
            reasons.append(f"recordings directory {self.recordings_dir} is not writable")
        if self.pending:
            reasons.append(
                f"{self.pending} recordings not finished ({len(self.retrying)} retrying, "
                f"{len(self.left)} left for recovery): {self.last_error}"
            )
        elif (ago := time.monotonic() - self.last_failure_at) < RECENT_FAILURE_S:
            reasons.append(f"a recording could not be written {ago:.0f} s ago: {self.last_error}")
        return reasons

    async def _retry(self, call_id: str, parts: CallRecording, target: Path) -> None:
        delay, error = RETRY_FIRST_S, "not tried again"
        try:
            for attempt in range(2, MAX_ATTEMPTS + 1):
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                if not _has_parts(parts.directory):
                    log.info("call %s: its raw parts are gone (recovered elsewhere)", call_id)
                    return
                try:
                    path = await asyncio.to_thread(_finalize, parts, target)
                except Exception as exc:
                    error = self._attempt_failed(call_id, exc, attempt)
                    continue
                await self.saved(call_id, path, "retry", attempt)
                return
            self.left[call_id] = error
            log.error(
                "call %s: recording not finished after %d attempts (%s); recovery will try again",
                call_id, MAX_ATTEMPTS, error,
            )  # fmt: skip
        finally:
            self.retrying.pop(call_id, None)

    def _attempt_failed(self, call_id: str, exc: BaseException, attempt: int) -> str:
        error = short_error(exc)
        self._count_failure(error)
        log.warning("call %s: the recording could not be written (attempt %d): %s", call_id, attempt, error)
        return error

    def _count_failure(self, error: str) -> None:
        self.failures += 1
        self.last_error, self.last_failure_at = error, time.monotonic()

    async def _event(self, call_id: str, status: str, payload: dict[str, Any]) -> None:
        at = time.time()
        await self.writer.write(
            call_id,
            lambda: self.writer.store.add_event(
                source="recording", status=status, payload=payload, at=at, call_id=call_id, cmiuuid=None
            ),
            "event",
        )


def _finalize(parts: CallRecording, target: Path) -> Path:
    path = parts.finalize(target)
    shutil.rmtree(parts.directory, ignore_errors=True)
    return path


def _has_parts(directory: Path) -> bool:
    return any((directory / name).exists() for name in (CallRecording.CALLER_PART, CallRecording.BOT_PART))
