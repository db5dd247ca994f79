"""A disk that refuses: the recordings folder read-only at hang-up or at the start of a call, and the
SQLite file made immutable under a running worker.

The tests run as root, so `chmod` would not stop the service: the recordings folder is made read-only
with a read-only bind mount of itself (EROFS for everything opened after it), and SQLite's shared-memory
file with `chattr +i` (EPERM; and, before the fix, SIGBUS through its memory mapping). Either needs
privileges (CAP_SYS_ADMIN, CAP_LINUX_IMMUTABLE) and is skipped without them;
tests/agent/records/test_recordings.py covers the same logic at CPU speed with faults any user can make.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.records import recordings
from testkit.simulator import PiopiySimulator
from tests.agent.conftest import API_HEADERS, SUPPORT_NUMBER, WEBHOOK_SECRET, Service, running_service
from tests.agent.faults import eventually, in_service, metric, runtime_of
from tests.agent.test_calls import call_id_of
from tests.agent.test_faults_process import serve
from tests.agent.test_lifecycle import record_of, worker_config


def _privileged(*commands: list[str]) -> bool:
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True, timeout=10)
        return True
    except (OSError, subprocess.SubprocessError):
        return False


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only (a read-only bind mount of itself) until the block ends."""
    path = str(directory)
    subprocess.run(["mount", "--bind", path, path], check=True, capture_output=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", path], check=True, capture_output=True)


@pytest.fixture(scope="module")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = str(tmp_path_factory.mktemp("mount-probe"))
    if not _privileged(["mount", "--bind", probe, probe], ["umount", probe]):
        pytest.skip("needs CAP_SYS_ADMIN for a read-only bind mount")


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service runs in this process: its recording retries come every 0.2-1 s instead of 1-30 s."""
    monkeypatch.setattr(recordings, "RETRY_FIRST_S", 0.2)
    monkeypatch.setattr(recordings, "RETRY_MAX_S", 1.0)
    monkeypatch.setattr(recordings, "MAX_ATTEMPTS", 1000)


async def healthz(service: Service) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        response = await http.get("/healthz")
    return response.status_code, response.json()


async def record(service: Service, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http:
        body: dict[str, Any] = (await http.get(f"/api/calls/{call_id}")).json()
    return body


async def greeted_call(service: Service) -> tuple[Any, str]:
    sim = PiopiySimulator(service.url, webhook_secret=WEBHOOK_SECRET, post_events=False)
    call = await sim.place_call(to_number=SUPPORT_NUMBER)
    await call.wait_for_bot_audio(timeout=15)
    await call.wait_until_bot_silent(quiet_s=0.8, timeout=30)
    return call, call_id_of(call.pcmo)


async def test_a_recording_the_folder_refuses_at_hang_up_reaches_the_record_once_it_is_writable(
    can_mount: None, quick_retries: None, tmp_path: Path
) -> None:
    """The recordings folder turns read-only during the call. Caller: the call as usual. At hang-up the
    WAV cannot be written: the record says `recording: null` with `meta.recording_pending` (the error),
    the raw parts stay, /healthz says `degraded` (still 200: the worker keeps taking calls) and /metrics
    counts the pending finalize. Once the folder is writable again, a retry writes the WAV: the record
    has its recording, /healthz is `ok`."""
    rec = tmp_path / "recordings"
    with running_service(tmp_path) as service:
        call, call_id = await greeted_call(service)
        with read_only(rec):
            await call.hangup()
            await eventually(lambda: call_id not in runtime_of(service).calls.sessions, "the call closed")
            saved = await record(service, call_id)
            assert saved["status"] == "completed" and saved["recording"] is None
            assert "Read-only file system" in saved["meta"]["recording_pending"]["error"]
            assert [e["status"] for e in saved["events"] if e["source"] == "recording"] == ["pending"]
            assert (rec / call_id / "caller.raw").stat().st_size > 0
            status, health = await healthz(service)
            assert status == 200 and health["status"] == "degraded", health
            assert any("not writable" in r for r in health["degraded"]["recordings"])
            assert await metric(service, "hotline_recording_finalizes_pending") == 1
            assert await metric(service, "hotline_recording_write_failures_total") >= 1
        await eventually(
            lambda: runtime_of(service).recordings.pending == 0, "the retry wrote the WAV", timeout=30
        )
        saved = await record(service, call_id)
        assert saved["recording"] is not None and "recording_pending" not in saved["meta"]
        assert saved["events"][-1]["payload"]["by"] == "retry"
        async with httpx.AsyncClient(base_url=service.url, headers=service.headers, timeout=10) as http:
            wav = await http.get(f"/api/calls/{call_id}/recording")
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        assert not (rec / call_id).exists()
        assert (await healthz(service))[1]["status"] == "ok"


async def test_a_recording_still_refused_at_shutdown_is_finished_by_recovery_after_a_restart(
    can_mount: None, tmp_path: Path
) -> None:
    """The folder stays read-only past the call and through the worker's shutdown (its retries end with
    it). After a restart on a writable folder, recovery finds the raw parts of the ended call and the
    record gets its recording (`recording/saved` by recovery)."""
    rec = tmp_path / "recordings"
    with contextlib.ExitStack() as folder:
        with running_service(tmp_path) as service:
            call, call_id = await greeted_call(service)
            folder.enter_context(read_only(rec))
            await call.hangup()
            await eventually(lambda: call_id not in runtime_of(service).calls.sessions, "the call closed")
            await eventually(lambda: runtime_of(service).writer.pending == 0, "the record written")
            assert (await record(service, call_id))["recording"] is None
        # the service has stopped, the folder still read-only
        assert (rec / call_id / "caller.raw").exists() and not (rec / f"{call_id}.wav").exists()
    with running_service(tmp_path) as service:
        runtime = runtime_of(service)

        async def recovered() -> bool:
            return (await record(service, call_id))["recording"] is not None

        await eventually(recovered, "recovery wrote the WAV", timeout=60)
        saved = await in_service(runtime, lambda: runtime.store.call_record(call_id))
        assert saved is not None and "recording_pending" not in saved["meta"]
        assert [e["payload"].get("by") for e in saved["events"] if e["source"] == "recording"] == [
            None,
            "recovery",
        ]
        assert (rec / f"{call_id}.wav").is_file() and not (rec / call_id).exists()


async def test_a_call_starting_on_a_read_only_folder_goes_on_unrecorded(
    can_mount: None, tmp_path: Path
) -> None:
    """The folder is read-only when the call starts: the call is answered and greeted all the same,
    unrecorded (a `recording/failed` event says why, /healthz says `degraded`)."""
    rec = tmp_path / "recordings"
    with running_service(tmp_path) as service:
        with read_only(rec):
            call, call_id = await greeted_call(service)  # greeted: the call was not stopped
            status, health = await healthz(service)
            assert status == 200 and health["status"] == "degraded"
            await call.hangup()
            await eventually(lambda: call_id not in runtime_of(service).calls.sessions, "the call closed")
        saved = await record(service, call_id)
        assert saved["status"] == "completed" and saved["recording"] is None
        assert [t["role"] for t in saved["turns"]] == ["bot"]
        (failed,) = [e["payload"] for e in saved["events"] if e["source"] == "recording"]
        assert "Read-only file system" in failed["error"] and failed["at_s"] == 0
        assert runtime_of(service).recordings.pending == 0


# --------------------------------------------------------------------------------------- SQLite


@pytest.fixture
def config(tmp_path: Path) -> Path:
    probe = tmp_path / "immutable-probe"
    probe.write_bytes(b"")
    if not _privileged(["chattr", "+i", str(probe)], ["chattr", "-i", str(probe)]):
        pytest.skip("needs chattr and CAP_LINUX_IMMUTABLE on an ext2/3/4-like file system")
    return worker_config(tmp_path)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` cannot be written, even by root, until the block ends. Flushed first: the pages the
    worker has mapped are clean, so its next write through the mapping faults (as after any writeback)."""
    fd = os.open(path, os.O_RDONLY)  # another process: closing it drops none of the worker's locks
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


async def test_an_unwritable_sqlite_file_degrades_the_worker_instead_of_killing_it(
    config: Path, tmp_path: Path
) -> None:
    """SQLite's `-shm` (memory-mapped by every connection) made immutable under a running `hotline serve`:
    before, the next store access ended the worker with SIGBUS. Now: answer_url still answers with the
    stream PCMO (its writes kept), /healthz says `degraded` with the reason, /metrics counts the failed
    writes; once the file is writable the kept writes land. A shutdown while it is unwritable exits 0."""
    log = tmp_path / "serve.log"
    process, url = serve(config, log)
    shm = tmp_path / "h.db-shm"
    headers = {"X-Hotline-Secret": WEBHOOK_SECRET, **API_HEADERS}  # webhooks, and /metrics
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as http:
            assert shm.exists()
            with immutable(shm):
                body = {"from": "919876543210", "to": SUPPORT_NUMBER, "cmiuuid": "u-immutable"}
                answer = await http.post("/piopiy/answer", json=body)
                assert answer.status_code == 200, answer.text
                assert [a["action"] for a in answer.json()] == ["stream"]
                call_id = call_id_of(answer.json())
                event = {**body, "status": "in_answered", "leg": "a", "direction": "inbound"}
                assert (await http.post("/piopiy/events", json=event)).status_code == 200
                health = (await http.get("/healthz")).json()
                assert health["status"] == "degraded" and "not writable" in health["degraded"]["store"][0]
                metrics = (await http.get("/metrics")).text
                assert _value(metrics, "hotline_store_write_failures_total") > 0
                assert _value(metrics, "hotline_record_writes_pending") == 3
                await asyncio.sleep(1.0)  # the writer retries meanwhile
                assert process.poll() is None, log.read_text()[-3000:]
            deadline = time.monotonic() + 30
            while _value((await http.get("/metrics")).text, "hotline_record_writes_pending") > 0:
                assert time.monotonic() < deadline, "the kept writes never landed"
                await asyncio.sleep(0.2)
            assert (await http.get("/healthz")).json()["status"] == "ok"
        saved = await record_of(tmp_path / "h.db", call_id)
        assert saved["status"] == "answered" and saved["cmiuuid"] == "u-immutable"
        assert [a["type"] for a in saved["actions"]] == ["answer"]
        assert [e["status"] for e in saved["events"]] == ["in_answered"]

        with immutable(shm):
            process.send_signal(signal.SIGTERM)
            assert process.wait(60) == 0, log.read_text()[-3000:]
        assert "exiting without closing the SQLite connections" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _value(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
