"""`hotline calls` (list, show, export, purge) and recording retention, over SQLite and PostgreSQL.

The records are written with the Store API, as the service writes them; the commands run through
`agent.cli.main.main` with a config.yaml pointing at that store.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import uuid
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from agent.cli.main import main
from agent.records.retention import purge_recordings, retention_loop, start_retention, stop_retention
from agent.records.store import Store
from tests.agent.conftest import write_config
from tests.agent.records.test_store import PG_DSN, _postgres_available

DAY = 86400.0
NOW = __import__("time").time()
# A and B share their first 8 characters (an ambiguous prefix); C and D are past any retention.
A = "c_a1b2c3d4e5f60718293a4b5c6d7e8f90"
B = "c_a1b2c3ff00112233445566778899aabb"
C = "c_0dd5e1f2a3b4c5d6e7f8091a2b3c4d5e"
D = "c_9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e9e"


@dataclass
class History:
    """A config.yaml whose store holds calls A-D, and their recordings."""

    config: Path
    url: str
    recordings: Path

    def run(self, *args: str) -> int:
        return main(["--config", str(self.config), "calls", *args])

    def record(self, call_id: str) -> dict[str, Any]:
        async def read() -> dict[str, Any] | None:
            store = Store(self.url)
            try:
                return await store.call_record(call_id)
            finally:
                await store.close()

        record = asyncio.run(read())
        assert record is not None
        return record


@pytest.fixture(params=["sqlite", "postgresql"])
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[History]:
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hotline.db'}"
    else:
        if not _postgres_available():
            if os.environ.get("CI"):
                pytest.fail("PostgreSQL at 127.0.0.1:5432 is required in CI")
            pytest.skip("no PostgreSQL at 127.0.0.1:5432")
        schema = f"hotline_calls_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        url = f"{PG_DSN}?options=-csearch_path%3D{schema}"
    recordings = tmp_path / "recordings"
    storage = {"url": url, "data_dir": str(tmp_path), "recordings_dir": str(recordings)}
    config = write_config(tmp_path, storage=storage)
    asyncio.run(_populate(url, recordings))
    try:
        yield History(config, url, recordings)
    finally:
        if schema is not None:
            with psycopg.connect(PG_DSN, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _wav(path: Path, seconds: float = 1.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x10\x00\x20\x00" * int(8000 * seconds))
    return str(path)


async def _populate(url: str, recordings: Path) -> None:
    store = Store(url)
    await store.init()
    calls: list[dict[str, Any]] = [
        dict(id=A, cmiuuid="u-a", bot="support_desk", from_number="919876543210",
             to_number="918040001000", status="completed", end_reason="caller_hangup",
             started_at=NOW - 3600, ended_at=NOW - 3558, recording_path=_wav(recordings / f"{A}.wav"),
             meta={"tags": ["angry", "refund"]}),
        dict(id=B, bot="order_line", from_number="917700000001", to_number="918040002000",
             status="dropped", end_reason="socket_closed_1006", started_at=NOW - 3 * DAY,
             ended_at=NOW - 3 * DAY + 1800, recording_path=_wav(recordings / f"{B}.wav")),
        dict(id=C, bot="support_desk", from_number="915550000000", to_number="918049999999",
             status="unrouted", started_at=NOW - 40 * DAY, ended_at=NOW - 40 * DAY + 5,
             recording_path=_wav(recordings / f"{C}.wav")),
        dict(id=D, bot="support_desk", from_number="915550000001", to_number="918040001000",
             status="completed", started_at=NOW - 30 * DAY, ended_at=NOW - 30 * DAY + 20,
             recording_path=str(recordings / "gone.wav")),  # a file someone already removed
    ]  # fmt: skip
    for fields in calls:
        await store.create_call(**fields)
    turns = [
        (A, "bot", "Thank you for calling City Bank."),
        (A, "caller", "I want a REFUND for the double charge, I'm 100% sure."),
        (A, "bot", "I can help with that."),
        (A, "caller", "Thanks."),
        (B, "caller", "Where is my order 5521?"),
    ]
    for i, (call_id, role, text) in enumerate(turns):
        await store.add_turn(call_id, idx=i, role=role, text=text, started_at=NOW - 3590 + i * 3)
    await store.add_action(A, "tag", {"tags": ["angry"]}, {"rule": "angry_caller"}, NOW - 3580)
    await store.upsert_cdr("u-a", "a", {"status": "answered", "duration": 42}, NOW - 3550)
    await store.close()


def _listed(history: History, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    """Call ids `calls list --json` prints, in order."""
    assert history.run("list", "--json", *args) == 0
    return [c["call_id"] for c in json.loads(capsys.readouterr().out)["calls"]]


def test_list_newest_first_as_a_table(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert history.run("list") == 0
    lines = capsys.readouterr().out.splitlines()
    header = [
        "started",
        "call",
        "id",
        "bot",
        "from",
        "→",
        "to",
        "duration",
        "status",
        "tags",
        "caller",
        "turns",
    ]
    assert lines[0].split() == header
    assert [line.split()[2] for line in lines[1:5]] == [A, B, D, C]
    started = dt.datetime.fromtimestamp(NOW - 3600).strftime("%Y-%m-%d %H:%M:%S")  # local time
    assert lines[1].startswith(started)
    assert lines[1].split()[3:] == ["support_desk", "+919876543210", "→", "+918040001000", "42.0", "s",
                                    "completed", "(caller_hangup)", "angry,refund", "2"]  # fmt: skip
    assert lines[-1] == "4 calls"
    assert history.run("list", "--bot", "order_line") == 0
    assert capsys.readouterr().out.endswith("\n1 call\n")
    assert history.run("list", "--limit", "2") == 0
    out = capsys.readouterr().out
    assert out.count("c_") == 2 and out.endswith("2 of 4 calls\n")


def test_list_filters(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert _listed(history, capsys, "--bot", "order_line") == [B]
    assert _listed(history, capsys, "--status", "unrouted") == [C]
    assert _listed(history, capsys, "--since", "2h") == [A]
    five_days_ago = (dt.datetime.now() - dt.timedelta(days=5)).strftime("%Y-%m-%d")
    assert _listed(history, capsys, "--since", five_days_ago) == [A, B]
    assert _listed(history, capsys, "--bot", "support_desk", "--since", "35d") == [A, D]
    with pytest.raises(SystemExit):
        history.run("list", "--since", "last tuesday")
    assert "neither a date/time" in capsys.readouterr().err


def test_search_transcripts_numbers_and_ids(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert _listed(history, capsys, "--search", "refund") == [A]  # said as "REFUND"
    assert _listed(history, capsys, "--search", "order 5521") == [B]
    assert _listed(history, capsys, "--search", "+91 77000") == [B]  # digits of the caller's number
    assert _listed(history, capsys, "--search", "8040001000") == [A, D]  # the number called
    assert _listed(history, capsys, "--search", "0dd5e1") == [C]  # part of the id
    assert _listed(history, capsys, "--search", "0%") == [A]  # % is a character, not a wildcard
    assert _listed(history, capsys, "--search", "thank", "--bot", "support_desk") == [A]
    assert history.run("list", "--search", "mortgage") == 0
    assert capsys.readouterr().out == "no calls match\n"


def test_list_json(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert history.run("list", "--json", "--limit", "3") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 4 and len(data["calls"]) == 3
    first = data["calls"][0]
    assert first["call_id"] == A and first["caller_turns"] == 2 and first["tags"] == ["angry", "refund"]
    assert first["duration_s"] == 42.0 and first["recording"]["url"] == f"/api/calls/{A}/recording"
    assert data["calls"][1]["caller_turns"] == 1 and data["calls"][2]["caller_turns"] == 0


def test_show_by_id_and_prefix(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert history.run("show", A) == 0
    full = capsys.readouterr().out
    assert f"call       {A} (inbound; PIOPIY u-a)" in full
    assert "from → to  +919876543210 → +918040001000" in full
    assert "status     completed (caller_hangup)" in full and "tags       angry, refund" in full
    assert "cdr        leg a: answered, 42 s (1 delivery)" in full
    assert f"recording  {history.recordings / A}.wav (31.3 KB)" in full
    assert "caller  I want a REFUND for the double charge" in full
    assert "action  tag angry (rule angry_caller)" in full
    assert history.run("show", "c_a1b2c3d4") == 0
    assert capsys.readouterr().out == full
    assert history.run("show", "c_a1b2c3ff", "--json") == 0
    assert json.loads(capsys.readouterr().out) == history.record(B)


def test_unknown_and_ambiguous_ids(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert history.run("show", "c_a1b2c3") == 1
    err = capsys.readouterr().err
    assert "'c_a1b2c3' matches several calls" in err and A in err and B in err
    assert history.run("show", "c_ffffffff") == 1
    assert "no call 'c_ffffffff'" in capsys.readouterr().err
    assert history.run("export", "c_a1") == 1  # too short to be a prefix
    assert "needs 6 characters or more" in capsys.readouterr().err


def test_export_writes_record_recording_transcript_and_report(
    history: History, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "exports"
    assert history.run("export", "c_a1b2c3d4", "--out", str(out)) == 0
    printed = capsys.readouterr().out.split()
    names = ["record.json", "recording.wav", "transcript.txt", "timeline.png", "report.html"]
    assert printed == [str(out / A / name) for name in names]
    assert json.loads((out / A / "record.json").read_text()) == history.record(A)
    assert (out / A / "recording.wav").read_bytes() == (history.recordings / f"{A}.wav").read_bytes()
    assert "I want a REFUND" in (out / A / "transcript.txt").read_text()
    assert (out / A / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert "<html" in (out / A / "report.html").read_text()
    assert history.run("export", C, "--out", str(out)) == 0  # no turns: still a report
    assert (out / C / "report.html").is_file()


def test_purge_dry_run_then_purge(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    wavs = {c: history.recordings / f"{c}.wav" for c in (A, B, C)}
    size = wavs[C].stat().st_size
    assert history.run("purge", "--days", "7", "--dry-run") == 0
    out = capsys.readouterr().out
    assert C in out and D in out and A not in out and B not in out and "already gone" in out
    assert f"would delete 2 recordings ({size / 1024:.1f} KB)" in out
    assert all(p.is_file() for p in wavs.values()) and history.record(C)["recording"] is not None

    assert history.run("purge", "--days", "7") == 0
    out = capsys.readouterr().out
    assert (
        f"deleted 2 recordings, freed {size / 1024:.1f} KB" in out
        and "already gone: 1; could not be deleted: 0" in out
    )
    assert not wavs[C].exists() and wavs[A].is_file() and wavs[B].is_file()
    for call_id in (C, D):
        record = history.record(call_id)
        assert record["recording"] is None and record["meta"]["recording_deleted_at"].endswith("Z")
    assert history.record(A)["recording"] is not None and history.record(B)["recording"] is not None
    assert [t["text"] for t in history.record(B)["turns"]] == ["Where is my order 5521?"]  # rows stay
    assert history.run("show", C) == 0
    out = capsys.readouterr().out
    assert "recording  deleted " in out and out.endswith("\n(nothing was said)\n")
    assert history.run("purge", "--days", "7") == 0
    assert "deleted 0 recordings, freed 0 B" in capsys.readouterr().out


async def test_purge_leaves_recordings_of_other_hosts_alone(history: History, tmp_path: Path) -> None:
    """A worker purges only under its own recordings directory: another host's files are not its own."""
    store = Store(history.url)
    try:
        elsewhere = await purge_recordings(store, 7, root=tmp_path / "another-disk")
        assert elsewhere.recordings == [] and (history.recordings / f"{C}.wav").is_file()
        mine = await purge_recordings(store, 7, root=history.recordings)
        assert sorted(r.call_id for r in mine.recordings) == sorted([C, D])
        assert not (history.recordings / f"{C}.wav").exists()
    finally:
        await store.close()


async def test_purge_removes_raw_parts_that_never_became_a_wav(history: History) -> None:
    """A recording the disk never took stays in raw parts: retention removes them once their last write
    is past the cutoff (the record says so), and a WAV half-written by a crash; recent parts stay."""
    store = Store(history.url)
    try:
        old, recent = NOW - 20 * DAY, NOW - DAY
        pending = {
            "recording_pending": {"since": "…", "error": "OSError: [Errno 28] No space left on device"}
        }
        await store.create_call(
            id="c_raw_old", status="completed", started_at=old - 60, ended_at=old, meta=pending
        )
        await store.create_call(
            id="c_raw_recent", status="completed", started_at=recent - 60, ended_at=recent
        )
        for call_id, at in (("c_raw_old", old), ("c_raw_recent", recent)):
            parts = history.recordings / call_id
            parts.mkdir(parents=True)
            for name in ("caller.raw", "bot.raw"):
                (parts / name).write_bytes(b"\x00\x00" * 800)
                os.utime(parts / name, (at, at))
        half = history.recordings / f"{A}.wav.4242-7f00.partial"
        half.write_bytes(b"RIFF")
        os.utime(half, (old, old))

        dry = await purge_recordings(store, 7, root=history.recordings, dry_run=True)
        assert sorted(r.call_id for r in dry.recordings if r.raw) == sorted(["c_raw_old", A])
        assert (history.recordings / "c_raw_old").is_dir() and half.exists()
        done = await purge_recordings(store, 7, root=history.recordings)
        assert done.failed == 0 and not (history.recordings / "c_raw_old").exists() and not half.exists()
        assert (history.recordings / "c_raw_recent" / "caller.raw").exists()
        record = await store.call_record("c_raw_old")
        assert record is not None and record["recording"] is None
        assert (
            record["meta"]["recording_deleted_at"].endswith("Z") and "recording_pending" not in record["meta"]
        )
        untouched = await store.call_record("c_raw_recent")
        assert untouched is not None and untouched["meta"] == {}
    finally:
        await store.close()


def test_purge_takes_the_configured_retention(history: History, capsys: pytest.CaptureFixture[str]) -> None:
    assert history.run("purge") == 1
    assert "storage.retention_days is not set" in capsys.readouterr().err
    assert (history.recordings / f"{C}.wav").is_file()
    data = yaml.safe_load(history.config.read_text())
    data["storage"]["retention_days"] = 0
    history.config.write_text(yaml.safe_dump(data))
    assert history.run("purge") == 1
    assert "storage.retention_days: Input should be greater than or equal to 1" in capsys.readouterr().err
    data["storage"]["retention_days"] = 35
    history.config.write_text(yaml.safe_dump(data))
    assert history.run("purge") == 0
    assert "deleted 1 recording, freed 31.3 KB" in capsys.readouterr().out  # C ended 40 days ago, D 30
    assert not (history.recordings / f"{C}.wav").exists() and history.record(D)["recording"] is not None


async def test_retention_loop_runs_at_start_then_hourly(history: History) -> None:
    store = Store(history.url)
    clock = [NOW]
    sleeps: list[float] = []
    b_kept: list[bool] = []  # after each run
    failing = {"left": 1}
    found = store.recordings_ended_before

    async def flaky(cutoff: float) -> list[tuple[str, str, float]]:
        if clock[0] > NOW and failing["left"]:  # the second run fails: logged, the loop goes on
            failing["left"] -= 1
            raise OSError("database went away")
        return await found(cutoff)

    class Stop(Exception):
        pass

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        b_kept.append((history.recordings / f"{B}.wav").exists())
        if len(sleeps) == 4:
            raise Stop
        clock[0] += seconds

    store.recordings_ended_before = flaky  # type: ignore[method-assign]
    try:
        with pytest.raises(Stop):
            # B ended 3 days less 30 minutes ago: past 3 days' retention within the first hour.
            await retention_loop(store, 3, clock=lambda: clock[0], sleep=fake_sleep)
        assert sleeps == [3600.0] * 4
        assert b_kept == [True, True, False, False]  # not yet due; the failed run; due
        assert (
            not (history.recordings / f"{C}.wav").exists() and not (history.recordings / f"{B}.wav").exists()
        )
        assert (history.recordings / f"{A}.wav").is_file() and failing["left"] == 0
        assert (await store.call_record(B) or {})["meta"]["recording_deleted_at"].endswith("Z")
    finally:
        await store.close()


async def test_service_task_purges_at_start_and_stops(history: History) -> None:
    store = Store(history.url)
    try:
        assert start_retention(store, None) is None
        task = start_retention(store, 7)
        assert task is not None
        for _ in range(250):  # the first run starts at once
            if not (await purge_recordings(store, 7, dry_run=True)).recordings:
                break
            await asyncio.sleep(0.02)
        assert not (history.recordings / f"{C}.wav").exists()
        assert history.recordings.joinpath(f"{B}.wav").is_file() and not task.done()  # it keeps running
        await stop_retention(task)
        assert task.cancelled()
        assert (await store.call_record(D) or {})["meta"]["recording_deleted_at"].endswith("Z")
    finally:
        await store.close()
