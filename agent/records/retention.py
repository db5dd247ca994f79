"""Recording retention: the WAV files of calls that ended more than N days ago are deleted.

The call rows, turns, actions and events stay; the row's recording path is cleared and
`meta.recording_deleted_at` says when, so a record without a recording explains itself. Recordings that
never became a WAV (the disk refused it, and nothing could finish it since) are raw parts
(`<recordings>/<call id>/*.raw`): they go too once their last write is older than the cutoff, and so do
WAVs half-written by a crash (`*.partial`). The service runs `retention_loop` (once at start-up, then
hourly); `hotline calls purge` runs `purge_recordings` once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent.records.store import Store
from agent.security import is_call_id
from pipelines.audio import CallRecording

log = logging.getLogger(__name__)

DAY_S = 86400.0
PURGE_EVERY_S = 3600.0
"""How often the service looks for expired recordings."""


@dataclass
class ExpiredRecording:
    """A recording past its retention: whose, where, when its call ended, and its size (0 if gone)."""

    call_id: str
    path: Path
    ended_at: float
    size: int
    exists: bool
    raw: bool = False
    """Raw parts (a directory) that never became a WAV; `ended_at` is their last write."""


@dataclass
class PurgeResult:
    """What one purge found and did."""

    cutoff: float
    """Recordings of calls that ended before this (epoch seconds) were due."""
    recordings: list[ExpiredRecording] = field(default_factory=list)
    deleted: int = 0
    """Files removed (or already gone) whose rows were cleared."""
    freed_bytes: int = 0
    missing: int = 0
    """Rows that named a file no longer on disk (cleared all the same)."""
    failed: int = 0
    """Files that could not be removed (left, with their rows, for the next run)."""


async def purge_recordings(
    store: Store,
    days: float,
    *,
    root: Path | None = None,
    now: float | None = None,
    dry_run: bool = False,
) -> PurgeResult:
    """Delete the recordings of calls that ended more than `days` ago and mark their rows.

    Only recordings under `root` (this worker's recordings directory) are considered: workers on other
    hosts keep theirs on their own disks, and a file missing here may well exist there. A missing file
    under `root` is not an error (a person removed it): the row is cleared anyway. A file that cannot be
    removed is logged and left for the next run. With `dry_run` nothing changes.
    """
    now = time.time() if now is None else now
    result = PurgeResult(cutoff=now - days * DAY_S)
    for call_id, path_text, ended_at in await store.recordings_ended_before(result.cutoff):
        path = Path(path_text)
        if not is_call_id(call_id):  # not a call of ours: its row is not trusted with a file
            log.warning("retention: %r is not a call id: its recording is left alone", call_id[:64])
            continue
        if root is not None and not _under(path, root):
            continue
        size = _size(path)
        expired = ExpiredRecording(call_id, path, ended_at, size or 0, size is not None)
        result.recordings.append(expired)
        if dry_run:
            result.freed_bytes += expired.size
            continue
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            log.warning("retention: could not delete %s of call %s: %s", path, call_id, exc)
            result.failed += 1
            continue
        if await store.clear_recording(call_id, path_text, now):
            result.deleted += 1
            result.freed_bytes += expired.size
            result.missing += not expired.exists
    if root is not None:
        for call_id, parts, last_write, size in await asyncio.to_thread(
            _raw_parts_before, root, result.cutoff
        ):
            expired = ExpiredRecording(call_id, parts, last_write, size, True, raw=True)
            result.recordings.append(expired)
            if dry_run:
                result.freed_bytes += size
                continue
            try:
                await asyncio.to_thread(_remove, parts)
            except OSError as exc:
                log.warning("retention: could not delete the raw recording %s: %s", parts, exc)
                result.failed += 1
                continue
            result.deleted += 1
            result.freed_bytes += size
            if parts.suffix != ".partial":
                await store.mark_raw_recording_deleted(call_id, now)
    if not dry_run and result.recordings:
        log.info(
            "retention: deleted %d recordings (%d bytes) of calls that ended over %g days ago; "
            "%d already gone, %d could not be deleted",
            result.deleted,
            result.freed_bytes,
            days,
            result.missing,
            result.failed,
        )
    return result


async def retention_loop(
    store: Store,
    days: float,
    *,
    root: Path | None = None,
    every_s: float = PURGE_EVERY_S,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Purge now, then every `every_s` seconds, until cancelled. A failed run is logged, never raised:
    the service goes on and the next run tries again."""
    while True:
        try:
            await purge_recordings(store, days, root=root, now=clock())
        except Exception:
            log.exception("retention: the purge of old recordings failed; retrying in %.0f s", every_s)
        await sleep(every_s)


def start_retention(store: Store, days: int | None, root: Path | None = None) -> asyncio.Task[None] | None:
    """The service's retention task over the recordings under `root`, or None when recordings are kept
    forever (`days` is None)."""
    if days is None:
        return None
    log.info("retention: recordings are kept %d days", days)
    return asyncio.create_task(retention_loop(store, days, root=root), name="recording-retention")


async def stop_retention(task: asyncio.Task[None] | None) -> None:
    """Cancel the retention task and wait for it to finish."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _under(path: Path, root: Path) -> bool:
    return path.resolve().is_relative_to(root.resolve())


def _raw_parts_before(root: Path, cutoff: float) -> list[tuple[str, Path, float, int]]:
    """(call id, path, last write, bytes) of raw recording parts and half-written WAVs
    (`<call id>.wav.<writer>.partial`) under `root` last written before `cutoff`."""
    found: list[tuple[str, Path, float, int]] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return found
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                parts = [Path(entry.path) / n for n in (CallRecording.CALLER_PART, CallRecording.BOT_PART)]
                stats = [p.stat() for p in parts if p.exists()]
                if stats and max(st.st_mtime for st in stats) < cutoff:
                    last = max(st.st_mtime for st in stats)
                    found.append((entry.name, Path(entry.path), last, sum(st.st_size for st in stats)))
            elif entry.name.endswith(".partial") and (st := entry.stat()).st_mtime < cutoff:
                found.append((entry.name.split(".", 1)[0], Path(entry.path), st.st_mtime, st.st_size))
        except OSError:
            continue  # gone meanwhile
    return sorted(found, key=lambda item: item[2])


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
