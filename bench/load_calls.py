"""The caller side of the load and soak benchmarks: scripted calls run by caller processes, and the check
that the service recorded every one of them.

A `CallerJob` is what one caller process runs: calls that start at given wall-clock times (the load
run's ramp), or lanes that place call after call until a deadline (the soak). Callers run in their own
processes (`run_jobs`) so that 200 simulated lines do not compete with the service's event loop or with
each other's; each process reports its CPU time and its own event-loop lag, which says whether the
callers kept up. Caller speech is real speech PCM (the test caller voice), made once by the parent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from agent.worker.loop_lag import LoopLagMonitor
from bench.pipeline_calls import RATE, Asked, Conversation, call_id_of, playout_gaps, questions_for
from testkit.simulator import PiopiySimulator, SimulatorError

GREETING_TIMEOUT_S = 30.0
REPLY_TIMEOUT_S = 20.0
SILENT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CallPlan:
    """One call (or, with `CallerJob.until`, one lane of calls): when it starts and what it asks."""

    index: int
    start_at: float  # epoch seconds
    questions: tuple[str, ...]
    talk_at: float | None = None  # epoch: after the greeting, stay on the line until then before asking


@dataclass(frozen=True)
class CallerJob:
    """What one caller process runs against the service at `url`."""

    url: str
    webhook_secret: str
    number: str
    clips: dict[str, bytes]  # caller utterance → L16 at 8 kHz
    plans: tuple[CallPlan, ...]
    until: float | None = None  # epoch: each plan is a lane placing calls until then (the soak)
    lane_stride: int = 1  # lanes in all processes: call indices of one lane step by this
    questions: int = 3  # per call of a lane
    min_call_s: float = 30.0  # a lane starts no call that could not end by `until`
    deadline: float = 0.0  # epoch: the job gives up (bounded run); 0: `until` + 3 min, or 10 min


@dataclass
class CallResult:
    """One call as the caller lived it."""

    index: int
    call_id: str = ""
    error: str = ""
    started_at: float = 0.0  # epoch
    ended_at: float = 0.0
    asked: list[dict[str, Any]] = field(default_factory=list)  # text, sent_at (epoch), client_ms
    playout: dict[str, float] = field(default_factory=dict)  # chunks, late, gap_ms, worst_ms


async def scripted_call(
    sim: PiopiySimulator, number: str, index: int, questions: Sequence[str], clips: dict[str, bytes], *,
    talk_at: float | None = None,
) -> CallResult:  # fmt: skip
    """Wait for the greeting, (stay on the line until `talk_at`,) ask each question after the bot has
    finished its previous line, then hang up."""
    result = CallResult(index, started_at=time.time())
    conv = Conversation("load", number)
    try:
        async with await sim.place_call(to_number=number) as call:
            result.call_id = call_id_of(call)
            await call.wait_for_bot_audio(timeout=GREETING_TIMEOUT_S)
            await call.wait_until_bot_silent(quiet_s=0.5, timeout=SILENT_TIMEOUT_S)
            if talk_at is not None:
                await asyncio.sleep(max(0.0, talk_at - time.time()))  # the line runs on, silent
            for text in questions:
                asked = Asked(text, call.now(), 0.0, 0.0)
                await call.say_pcm(clips[text], RATE)
                asked.sent_at, asked.line_end = time.monotonic(), call.now()
                sent_wall = time.time()
                conv.asked.append(asked)
                with contextlib.suppress(SimulatorError):
                    await call.wait_for_bot_audio(timeout=REPLY_TIMEOUT_S, since=asked.line_end)
                    asked.first_audio_at = time.monotonic()
                client_ms = round(asked.client_ms, 1) if asked.client_ms is not None else None
                result.asked.append({"text": text, "sent_at": sent_wall, "client_ms": client_ms})
                if client_ms is None:
                    result.error = f"no reply to {text!r} within {REPLY_TIMEOUT_S:g} s"
                await call.wait_until_bot_silent(quiet_s=0.5, timeout=SILENT_TIMEOUT_S)
            conv.chunks = [(t, len(a.audio) / 2 / a.sample_rate) for t, a in call.received_audio]
            if call.errors:
                result.error = result.error or f"bad frames from the service: {call.errors[0].reason}"
    except (SimulatorError, OSError, httpx.HTTPError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    result.ended_at = time.time()
    result.playout = playout_gaps(conv)
    return result


async def run_calls(job: CallerJob) -> dict[str, Any]:
    """Run a job in this process's loop; its calls, CPU seconds and loop lag (see `run_jobs`)."""
    sim = PiopiySimulator(job.url, webhook_secret=job.webhook_secret, http_timeout=30.0)
    lag = LoopLagMonitor()
    lag.start()
    cpu0, wall0 = _cpu_s(), time.monotonic()
    deadline = job.deadline or ((job.until + 180.0) if job.until else time.time() + 600.0)

    async def one(plan: CallPlan) -> list[CallResult]:
        await asyncio.sleep(max(0.0, plan.start_at - time.time()))
        if job.until is None:
            questions = plan.questions
            return [
                await scripted_call(sim, job.number, plan.index, questions, job.clips, talk_at=plan.talk_at)
            ]
        done: list[CallResult] = []
        index = plan.index
        while time.time() + job.min_call_s < job.until:
            questions = tuple(questions_for(index, job.questions))
            done.append(await scripted_call(sim, job.number, index, questions, job.clips))
            index += job.lane_stride
        return done

    tasks = [asyncio.create_task(one(plan)) for plan in job.plans]
    finished, late = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.time()))
    for task in late:
        task.cancel()
    await asyncio.gather(*late, return_exceptions=True)
    await lag.stop()
    calls = [asdict(r) for t in finished if not t.cancelled() and t.exception() is None for r in t.result()]
    failed = [repr(t.exception()) for t in finished if not t.cancelled() and t.exception() is not None]
    return {
        "calls": calls,
        "unfinished_lanes": len(late),
        "crashed": failed[:3],
        "cpu_s": round(_cpu_s() - cpu0, 2),
        "wall_s": round(time.monotonic() - wall0, 1),
        "loop_lag_ms": lag.summary(),
        "pid": os.getpid(),
    }


def run_job(job: CallerJob) -> dict[str, Any]:
    """A caller process's entry point. Callers run at a lower priority (nice 10): on a machine short
    of CPU the service, not the simulated platform, gets it first."""
    with contextlib.suppress(OSError):
        os.nice(10)
    return asyncio.run(run_calls(job))


async def run_jobs(jobs: Sequence[CallerJob]) -> list[dict[str, Any]]:
    """Each job in its own caller process (spawned: nothing of the parent's loop is inherited)."""
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=get_context("spawn")) as pool:
        return list(await asyncio.gather(*(loop.run_in_executor(pool, run_job, job) for job in jobs)))


def _cpu_s() -> float:
    times = os.times()
    return times.user + times.system


# ------------------------------------------------------------------------------- what was recorded


async def check_records(
    api: httpx.AsyncClient, calls: Sequence[dict[str, Any]], recordings_dir: Path, *, settle_s: float = 20.0
) -> dict[str, Any]:
    """Every call placed has a closed record (completed by the caller's hang-up) with one caller turn
    per question asked, a bot turn answering each, and its two-channel recording on disk. Returns the
    counts, the first problems, and the records' caller turns (for the service-side latencies)."""
    gate = asyncio.Semaphore(16)

    async def one(call: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
        if not call["call_id"]:
            return [f"call {call['index']}: never connected ({call['error']})"], []
        async with gate:
            record = await _closed_record(api, call["call_id"], time.monotonic() + settle_s)
        return _record_problems(call, record, recordings_dir), _caller_turns(call, record)

    checked = await asyncio.gather(*(one(c) for c in calls))
    problems = [p for found, _ in checked for p in found]
    return {
        "calls": len(calls),
        "recorded": sum(1 for found, _ in checked if not found),
        "problems": len(problems),
        "first_problems": problems[:5],
        "turns": [t for _, turns in checked for t in turns],
    }


async def _closed_record(api: httpx.AsyncClient, call_id: str, deadline: float) -> dict[str, Any]:
    while True:
        response = await api.get(f"/api/calls/{call_id}")
        record: dict[str, Any] = response.json() if response.status_code == 200 else {}
        if (record.get("ended_at") and not record.get("live")) or time.monotonic() > deadline:
            return record
        await asyncio.sleep(0.2)


def _record_problems(call: dict[str, Any], record: dict[str, Any], recordings_dir: Path) -> list[str]:
    who = f"call {call['call_id']}"
    if not record:
        return [f"{who}: no record"]
    out = []
    if record.get("status") != "completed" or record.get("end_reason") != "caller_hangup":
        out.append(f"{who}: {record.get('status')} ({record.get('end_reason')}), not completed by the caller")
    turns = record.get("turns", [])
    caller = [t for t in turns if t["role"] == "caller"]
    if len(caller) != len(call["asked"]):
        out.append(f"{who}: {len(caller)} caller turns recorded for {len(call['asked'])} questions")
    if sum(1 for t in turns if t["role"] == "bot") < 1 + len(call["asked"]):
        out.append(f"{who}: fewer bot turns than the greeting plus one reply per question")
    path = recordings_dir / f"{call['call_id']}.wav"
    if not record.get("recording") or not path.is_file() or path.stat().st_size <= 44:
        out.append(f"{who}: no recording")
    return out


def _caller_turns(call: dict[str, Any], record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's caller turns with what was asked, when (epoch) and the caller-side latency."""
    caller = [t for t in record.get("turns", []) if t["role"] == "caller"]
    if len(caller) != len(call["asked"]):
        return []
    return [
        {**turn["latency_ms"], "asked": asked["text"], "heard": turn["text"], "sent_at": asked["sent_at"],
         "client_ms": asked["client_ms"]}
        for turn, asked in zip(caller, call["asked"], strict=True)
    ]  # fmt: skip
