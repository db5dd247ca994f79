"""`hotline calls`: the call history in the service's own store (config.yaml's storage URL).

    hotline calls list --since 2h --bot support_desk --search refund   # newest first; --json for scripts
    hotline calls show c_5f0c12                 # facts, tags, CDRs and the transcript (6+ chars of an id)
    hotline calls export c_5f0c12 --out /tmp    # record.json, recording.wav, transcript.txt, timeline, page
    hotline calls purge --days 30 --dry-run     # what storage.retention_days deletes, once

Exit status: 0, or 1 when a call is unknown or ambiguous (or purge has no retention to apply).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from agent.config.settings import Settings
from agent.records.store import Store
from agent.security import CALL_ID_PATTERN, is_call_id, is_call_id_prefix

MIN_PREFIX = 6
"""An id prefix shorter than this is not looked up."""
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_parser(sub: Any) -> None:
    """The `calls` subcommand and its own subcommands."""
    calls = sub.add_parser("calls", help="call history: list, show, export; purge old recordings")
    commands = calls.add_subparsers(dest="calls_command", required=True)
    listing = commands.add_parser("list", help="calls, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many calls (default 20)")
    listing.add_argument("--bot", help="only this bot's calls")
    listing.add_argument("--status", help="only calls with this status (completed, dropped, unrouted…)")
    listing.add_argument(
        "--since", type=since_time, help="started since a date or time (2026-11-01, 2026-11-01T09:30) or "
        "a while ago (90s, 30m, 2h, 7d, 2w)",
    )  # fmt: skip
    listing.add_argument("--search", help="text said on the call, a number, or part of the call id")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = commands.add_parser("show", help="one call: facts, tags, CDRs and the transcript")
    show.add_argument("call_id", help="a call id, or its first characters (6 or more)")
    show.add_argument("--json", action="store_true", help="the full call record (as GET /api/calls/ID)")
    export = commands.add_parser("export", help="write a call's record, recording, transcript and report")
    export.add_argument("call_id", help="a call id, or its first characters (6 or more)")
    export.add_argument("--out", metavar="DIR", help="writes DIR/ID/… (default: <data_dir>/exports)")
    purge = commands.add_parser("purge", help="delete the recordings of calls past their retention, once")
    purge.add_argument(
        "--days", type=float, help="recordings older than this (default: storage.retention_days)"
    )
    purge.add_argument("--dry-run", action="store_true", help="report what would be deleted; change nothing")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out `hotline calls …`."""
    return asyncio.run(_run(settings, args))


def since_time(text: str, *, now: float | None = None) -> float:
    """`--since`: '2h' (a while ago: s, m, h, d, w) or a local date/time ('2026-11-01') → epoch seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text.strip())
    if match:
        return (time.time() if now is None else now) - float(match[1]) * _UNITS_S[match[2]]
    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()  # naive: local time
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a date/time (2026-11-01, 2026-11-01T09:30) nor a while ago (2h, 7d)"
        ) from None


async def _run(settings: Settings, args: argparse.Namespace) -> int:
    store = Store(settings.service.storage.url, base_dir=settings.base_dir)
    await store.init()
    try:
        if args.calls_command == "list":
            return await _list(store, args)
        if args.calls_command == "purge":
            return await _purge(store, settings, args)
        call_id = await _resolve(store, args.call_id)
        if call_id is None:
            return 1
        if args.calls_command == "show":
            return await _show(store, call_id, args.json)
        out = Path(args.out) if args.out else settings.path(settings.service.storage.data_dir) / "exports"
        return await _export(store, call_id, out / call_id)
    finally:
        await store.close()


async def _resolve(store: Store, given: str) -> str | None:
    """The call id `given` names (itself, or the one call it is a prefix of); else a message on stderr.
    Only well-formed ids are looked up or returned: the id names the export's directory."""
    if not is_call_id_prefix(given):
        print(
            f"{given[:80]!r} is not a call id ({CALL_ID_PATTERN}, or its first characters)", file=sys.stderr
        )
        return None
    if is_call_id(given) and await store.call_record(given) is not None:
        return given
    found = await store.call_ids_with_prefix(given, limit=5) if len(given) >= MIN_PREFIX else []
    matches = [m for m in found if is_call_id(m)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        more = ", …" if len(matches) == 5 else ""
        print(
            f"{given!r} matches several calls ({', '.join(matches)}{more}): give more of the id",
            file=sys.stderr,
        )
    elif len(given) < MIN_PREFIX:
        print(f"no call {given!r} (a prefix of an id needs {MIN_PREFIX} characters or more)", file=sys.stderr)
    else:
        print(f"no call {given!r} (see `hotline calls list`)", file=sys.stderr)
    return None


async def _list(store: Store, args: argparse.Namespace) -> int:
    total, calls = await store.list_calls(
        limit=args.limit, bot=args.bot, status=args.status, since=args.since, search=args.search
    )
    turns = await store.caller_turn_counts([c["call_id"] for c in calls])
    for call in calls:
        call["caller_turns"] = turns.get(call["call_id"], 0)
    if args.json:
        print(json.dumps({"total": total, "calls": calls}, indent=2, ensure_ascii=False))
        return 0
    if not calls:
        print("no calls" + (" match" if total or _filtered(args) else " yet"))
        return 0
    rows = [["started", "call id", "bot", "from → to", "duration", "status", "tags", "caller turns"]]
    rows += [
        [
            _local(c["started_at"]), c["call_id"], c["bot"] or "-", _numbers(c), _duration(c["duration_s"]),
            _status(c), ",".join(c["tags"]) or "-", str(c["caller_turns"]),
        ]
        for c in calls
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"{len(calls)} of {total} calls" if total > len(calls) else _n(total, "call"))
    return 0


async def _show(store: Store, call_id: str, as_json: bool) -> int:
    from agent.records.words import transcript_text

    record = await store.call_record(call_id)
    assert record is not None  # resolved just before
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    facts = [
        ("call", f"{record['call_id']} ({record['direction']}; PIOPIY {record['cmiuuid'] or '-'})"),
        ("bot", record["bot"] or "-"),
        ("from → to", _numbers(record)),
        ("started", f"{_local(record['started_at'])}, duration {_duration(record['duration_s'])}"),
        ("status", _status(record)),
        ("tags", ", ".join(record["tags"]) or "-"),
        ("recording", await _recording_note(store, record)),
    ]
    facts += [("cdr", _cdr(c)) for c in record["cdr"]] or [("cdr", "none received")]
    for name, value in facts:
        print(f"{name:<10} {value}")
    print()
    print(transcript_text(record) or "(nothing was said)\n", end="")
    return 0


async def _export(store: Store, call_id: str, out: Path) -> int:
    from agent.records.report import write_report

    record = await store.call_record(call_id)
    assert record is not None
    recording = await store.recording_path(call_id)
    if recording is not None and not recording.is_file():
        print(f"the recording {recording} is missing; exporting without it", file=sys.stderr)
        recording = None
    paths = await asyncio.to_thread(write_report, record, out, recording=recording)
    for name in ("record", "recording", "transcript", "timeline", "html"):
        if name in paths:
            print(paths[name])
    return 0


async def _purge(store: Store, settings: Settings, args: argparse.Namespace) -> int:
    from agent.records.retention import purge_recordings

    days = args.days if args.days is not None else settings.service.storage.retention_days
    if days is None:
        print(
            "recordings are kept forever (storage.retention_days is not set): pass --days N", file=sys.stderr
        )
        return 1
    root = settings.path(settings.service.storage.recordings_dir)
    result = await purge_recordings(store, days, root=root, dry_run=args.dry_run)
    for r in result.recordings:
        size = _bytes(r.size) if r.exists else "already gone"
        print(f"  {r.call_id}  ended {_local_ts(r.ended_at)}  {size}  {r.path}")
    before = f"calls that ended before {_local_ts(result.cutoff)} ({days:g} days)"
    if args.dry_run:
        due = _n(len(result.recordings), "recording")
        print(f"would delete {due} ({_bytes(result.freed_bytes)}) of {before}")
        return 0
    print(f"deleted {_n(result.deleted, 'recording')}, freed {_bytes(result.freed_bytes)}, of {before}")
    if result.missing or result.failed:
        print(f"already gone: {result.missing}; could not be deleted: {result.failed} (see the log)")
    return 0


async def _recording_note(store: Store, record: dict[str, Any]) -> str:
    deleted = record["meta"].get("recording_deleted_at")
    if deleted:
        return f"deleted {_local(deleted)} (storage.retention_days)"
    path = await store.recording_path(record["call_id"])
    if path is None:
        return "none"
    return f"{path} ({_bytes(path.stat().st_size)})" if path.is_file() else f"{path} (missing)"


def _filtered(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.bot, args.status, args.since, args.search))


def _cdr(cdr: dict[str, Any]) -> str:
    duration = f", {cdr['duration']} s" if cdr.get("duration") not in (None, "") else ""
    deliveries = cdr.get("deliveries", 1)
    plural = "delivery" if deliveries == 1 else "deliveries"
    return f"leg {cdr['leg']}: {cdr.get('status') or '?'}{duration} ({deliveries} {plural})"


def _status(call: dict[str, Any]) -> str:
    return str(call["status"]) + (f" ({call['end_reason']})" if call.get("end_reason") else "")


def _numbers(call: dict[str, Any]) -> str:
    return " → ".join(f"+{n}" if n else "?" for n in (call["from"], call["to"]))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}" if minutes else f"{seconds:.1f} s"


def _local(iso_time: str | None) -> str:
    if not iso_time:
        return "-"
    return _local_ts(dt.datetime.fromisoformat(iso_time.replace("Z", "+00:00")).timestamp())


def _local_ts(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
