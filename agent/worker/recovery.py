"""Calls a dead worker left behind: finished as `incomplete`, their recordings saved.

A worker killed mid-call (SIGKILL, out of memory, a lost host) cannot close its calls. Their records
were written as the calls went, so what was said and done is there, but the calls stay `active` and
their audio is still in raw parts (`recordings/<call id>/caller.raw`, `bot.raw`). Each call records
who serves it (`meta.served_by`: worker id, host, process id and a per-start `boot` id). At start-up
(and every `RECOVERY_EVERY_S` while in a cluster) a worker finishes the calls whose worker is gone:
status `incomplete`, end reason `worker_lost`, `ended_at` the end of what was recorded or written,
the raw parts joined into the call's WAV, and a `recovery/incomplete` event saying who found it.

A worker is known to be gone when:
- with Redis, its heartbeat has expired (or it is this worker's own id from an earlier start);
- on this host, its process no longer exists (or it is this very process id from an earlier start:
  a restarted container);
- without any cluster configured, the worker runs alone by definition: any other start's call is gone.
Otherwise (another host's worker while Redis is unreachable) the call is left alone, and so is a call
whose raw recording parts are still being written (its worker lives, whatever Redis says): a live
worker's call is never touched. Claiming is one conditional update, so two workers never finish the same call.

Recordings left behind: a call that ended while the disk refused its WAV (full, read-only) keeps its raw
parts, and its worker retries for a while (agent/records/recordings.py). At start-up and every
RECOVERY_EVERY_S the service also finishes the raw parts of any ended call that still has no recording
(`finish_left_recordings`), so the record gets it once the disk takes it, after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from agent.records.recordings import RecordingFinisher, short_error
from agent.records.store import Store
from agent.security import is_call_id
from agent.worker.cluster import Cluster
from pipelines.audio import CallRecording

log = logging.getLogger(__name__)

RECOVERY_EVERY_S = 60.0
"""In a cluster, how often a worker looks for calls of workers that died since."""
END_REASON = "worker_lost"
FRESH_PARTS_S = 10.0
"""Raw recording parts written this recently belong to a live call (caller audio comes every 20 ms)."""


@dataclass(frozen=True)
class Incarnation:
    """This start of this worker: what a call records as `meta.served_by`."""

    worker: str
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    boot: str = field(default_factory=lambda: uuid.uuid4().hex[:16])

    def as_meta(self) -> dict[str, Any]:
        """The `served_by` value of this worker's calls."""
        return {"worker": self.worker, "host": self.host, "pid": self.pid, "boot": self.boot}


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


async def worker_gone(
    served_by: dict[str, Any] | None, me: Incarnation, cluster: Cluster | None, *, alone: bool
) -> bool:
    """Whether the worker that served a call is known to be gone (see the module docstring)."""
    if not served_by:
        return alone  # (a call from before `served_by` was recorded)
    if served_by.get("boot") == me.boot:
        return False  # one of ours, live or still being saved
    if cluster is not None:
        if served_by.get("worker") == me.worker:
            return True  # our own name from an earlier start
        try:
            return not await cluster.worker_alive(str(served_by.get("worker")))
        except (RedisError, OSError):
            pass  # Redis cannot tell: fall back to what this host can see
    if served_by.get("host") == me.host:
        pid = served_by.get("pid")
        return not isinstance(pid, int) or pid == me.pid or not process_alive(pid)
    return alone


@dataclass
class RecoveryPass:
    """What one look for abandoned calls did."""

    finished: list[str] = field(default_factory=list)
    """Calls finished as `incomplete`."""
    waiting: list[str] = field(default_factory=list)
    """Calls whose worker looks gone but whose raw parts were written moments ago: looked at again."""


def died_here(served_by: dict[str, Any] | None, me: Incarnation) -> bool:
    """Whether the call's process is provably dead: on this host, and that process id no longer exists
    (or it is this very process id from an earlier start, a restarted container)."""
    if not served_by or served_by.get("host") != me.host or served_by.get("boot") == me.boot:
        return False
    pid = served_by.get("pid")
    return isinstance(pid, int) and (pid == me.pid or not process_alive(pid))


async def recover_abandoned_calls(
    store: Store, recordings_dir: Path, me: Incarnation, cluster: Cluster | None, *, alone: bool
) -> RecoveryPass:
    """Finish every call left active by a worker that is gone."""
    done = RecoveryPass()
    for call in await store.calls_left_active():
        served_by = call["meta"].get("served_by")
        if not await worker_gone(served_by, me, cluster, alone=alone):
            continue
        if not is_call_id(call["id"]):  # its id would name paths outside the recordings
            log.warning("call %r left active is not one of ours: left alone", str(call["id"])[:64])
            continue
        # Fresh raw parts mean audio may still arrive (its worker lost Redis, say), unless the process
        # that wrote them is provably dead: a worker restarted within seconds of a crash still recovers.
        if not died_here(served_by, me) and _still_recording(recordings_dir / call["id"]):
            done.waiting.append(call["id"])
            continue
        if await _finish(store, recordings_dir, call, served_by, me):
            done.finished.append(call["id"])
    if done.finished:
        log.warning(
            "finished %d calls left active by a worker that is gone: %s", len(done.finished), done.finished
        )
    return done


async def _finish(
    store: Store,
    recordings_dir: Path,
    call: dict[str, Any],
    served_by: dict[str, Any] | None,
    me: Incarnation,
) -> bool:
    call_id = call["id"]
    now = time.time()
    if not await store.claim_abandoned(call_id, end_reason=END_REASON, ended_at=now):
        return False  # it ended after all, or another worker got there first
    recording: Path | None = None
    samples = 0
    rate = int(call["sample_rate"] or 8000)
    parts = recordings_dir / call_id
    try:
        recording, samples = await asyncio.to_thread(_join_parts, parts, rate, recordings_dir)
    except FileNotFoundError:
        pass  # nothing recorded (or no access to that worker's recordings)
    except Exception:
        log.exception("call %s: could not recover the recording from %s", call_id, parts)
    start = call["connected_at"] or call["started_at"]
    ends = [t for t in (await store.last_activity(call_id), start + samples / rate if samples else None) if t]
    ended_at = min(max(ends, default=start), now)
    fields: dict[str, Any] = {"ended_at": ended_at}
    if recording is not None:
        fields["recording_path"] = str(recording)
    await store.update_call(call_id, **fields)
    payload = {
        "served_by": served_by,
        "found_by": me.as_meta(),
        "recording_seconds": round(samples / rate, 2),
    }
    await store.add_event(
        source="recovery", status="incomplete", payload=payload, at=now, call_id=call_id, cmiuuid=None
    )
    log.warning("call %s: its worker is gone; marked incomplete (%.1f s recorded)", call_id, samples / rate)
    return True


def _still_recording(parts: Path) -> bool:
    newest = 0.0
    for name in (CallRecording.CALLER_PART, CallRecording.BOT_PART):
        with contextlib.suppress(OSError):
            newest = max(newest, (parts / name).stat().st_mtime)
    return time.time() - newest < FRESH_PARTS_S


def _join_parts(parts: Path, rate: int, recordings_dir: Path) -> tuple[Path, int]:
    recording = CallRecording.recover(parts, rate)
    samples = recording.caller_samples
    target = recording.finalize(recordings_dir / f"{parts.name}.wav")
    shutil.rmtree(parts, ignore_errors=True)
    return target, samples


async def finish_left_recordings(
    store: Store, recordings_dir: Path, finisher: RecordingFinisher
) -> RecoveryPass:
    """Turn the raw parts of ended calls without a recording into their WAVs: `finished` names them,
    `waiting` the ended calls whose parts were written moments ago (looked at again once quiet).

    Left alone: calls still active (recover_abandoned_calls decides on those), calls whose parts were
    written moments ago (live somewhere), calls this process is still recording or retrying, and parts
    of calls the store does not know (retention removes them in time).
    """
    done = RecoveryPass()
    names = await asyncio.to_thread(_raw_part_dirs, recordings_dir)
    candidates = [n for n in names if not finisher.busy(n)]
    if not candidates:
        return done
    states = await store.recording_states(candidates)
    for call_id in candidates:
        state = states.get(call_id)
        parts = recordings_dir / call_id
        if state is None or state["status"] == "active":
            continue
        if call_id not in finisher.left and _still_recording(parts):
            done.waiting.append(call_id)  # written moments ago: live on another worker, or just ended
            continue
        rate = int(state["sample_rate"] or 8000)
        try:
            recording, _ = await asyncio.to_thread(_join_parts, parts, rate, recordings_dir)
        except FileNotFoundError:
            continue  # finished meanwhile (by its own worker's retry, say)
        except Exception as exc:
            finisher.left_for_recovery(call_id, short_error(exc))
            log.warning("call %s: its recording is still not writable: %s", call_id, short_error(exc))
            continue
        await finisher.saved(call_id, recording, "recovery", 1)
        done.finished.append(call_id)
    return done


def _raw_part_dirs(recordings_dir: Path) -> list[str]:
    try:
        entries = list(os.scandir(recordings_dir))
    except OSError:
        return []
    return sorted(
        e.name
        for e in entries
        if e.is_dir(follow_symlinks=False)
        and any(
            os.path.exists(os.path.join(e.path, n))
            for n in (CallRecording.CALLER_PART, CallRecording.BOT_PART)
        )
    )


async def recovery_loop(
    store: Store,
    recordings_dir: Path,
    me: Incarnation,
    cluster: Cluster | None,
    *,
    alone: bool,
    finisher: RecordingFinisher | None = None,
) -> None:
    """Once now, then every RECOVERY_EVERY_S while in a cluster (workers may die at any time); alone,
    again while calls wait for their raw parts to go quiet or the store could not be read. With a
    `finisher`, every round also finishes recordings left in raw parts, and the loop never ends."""
    look_for_abandoned = True
    while True:
        again = False
        if look_for_abandoned or cluster is not None:
            try:
                done = await recover_abandoned_calls(store, recordings_dir, me, cluster, alone=alone)
                again = bool(done.waiting)
            except Exception:  # the store is down, say: the next round tries again
                log.exception("could not look for calls left by workers that are gone")
                again = True
        look_for_abandoned = again  # alone: until no call waits for its parts to go quiet
        soon = again
        if finisher is not None:
            try:
                # An ended call's parts still fresh (its worker stopped moments before this start):
                # look again once they are quiet, not a whole RECOVERY_EVERY_S later.
                soon = bool((await finish_left_recordings(store, recordings_dir, finisher)).waiting) or soon
            except Exception:
                log.exception("could not look for recordings left in raw parts")
        elif cluster is None and not again:
            return
        await asyncio.sleep(FRESH_PARTS_S if soon else RECOVERY_EVERY_S)


async def stop_recovery(task: asyncio.Task[None] | None) -> None:
    """Cancel the recovery task and wait for it."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
