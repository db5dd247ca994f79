"""Playing a scenario against a service: the PIOPIY side by the simulator, the caller by the steps.

`play` places the call and does each step, waiting for the bot between caller turns like a real caller;
`run_scenario` then reads the call's record and recording over the API (with an API key), checks the
expectations and writes the report (transcript, timeline picture, HTML page). `local_service` serves a
config in-process, with its records kept apart from production ones, for `hotline replay` and pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from agent.config.base import normalize_number
from agent.config.settings import Settings
from agent.web.api_keys import new_api_key
from pipelines.audio import read_wav, resample
from testkit.caller_voice import asterisk_prompt, caller_says, espeak_says
from testkit.expect import Failure, check
from testkit.line_audio import CallEnded, SimulatorTimeout
from testkit.replay import finished_record
from testkit.replay_report import write_replay_report
from testkit.scenario import SPEECH, Scenario, Step
from testkit.simulator import PiopiySimulator, SimulatedCall

Progress = Callable[[int, int, str], None]
"""(step number from 1, steps in all, what is happening)."""
QUIET_S = 0.8
"""The bot counts as done when nothing has played for this long."""
END_QUIET_S = 1.5
SERVICE_AHEAD_S = 1.2
"""How far ahead of the line the service sends bot audio (one 0.6 s chunk plus 0.6 s of lead). A line
faster than real time plays each chunk as it arrives, so the bot is still talking, as the service
sees it, up to this long after the last chunk came: the quiet wait grows by that much."""


@dataclass
class ScenarioRun:
    """What came of playing a scenario."""

    scenario: Scenario
    call_id: str
    record: dict[str, Any]
    failures: list[Failure]
    seconds: float
    report: dict[str, Path] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Every expectation held."""
        return not self.failures


def number_of(scenario: Scenario, settings: Settings | None) -> str:
    """The number the scenario dials: `to`, or the number config routes to its `bot`."""
    if scenario.to is not None:
        return normalize_number(scenario.to)
    if settings is None:
        raise ValueError(f"{scenario.name}: `bot: {scenario.bot}` needs the config (or give `to:`)")
    numbers = [n for n, bot in sorted(settings.service.numbers.items()) if bot == scenario.bot]
    if not numbers:
        raise ValueError(f"{scenario.name}: no number in config routes to bot {scenario.bot!r}")
    return numbers[0]


def step_audio(scenario: Scenario, step: Step, rate: int) -> bytes:
    """The caller audio of a speech step, at the call's rate, with its gain."""
    if step.say is not None:
        pcm = caller_says(step.say, rate)
    elif step.espeak is not None:
        pcm = espeak_says(step.espeak, step.language, rate)
    elif step.asterisk is not None:
        pcm = asterisk_prompt(step.asterisk, rate)
    else:
        assert step.audio is not None
        raw, source_rate = read_wav(scenario.resolve(step.audio))
        pcm = resample(raw, source_rate, rate)
    if step.gain_db:
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * 10 ** (step.gain_db / 20)
        pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
    return pcm


def noise(seconds: float, dbfs: float, rate: int, seed: int) -> bytes:
    """White line noise at `dbfs` RMS."""
    rng = np.random.default_rng(seed)
    level = 32768 * 10 ** (dbfs / 20)
    samples = rng.normal(0, level, int(seconds * rate))
    return np.clip(samples, -32768, 32767).astype("<i2").tobytes()


def quiet_for(speed: float, quiet_s: float = QUIET_S) -> float:
    """The quiet wait that means "the bot is done" on a line running at `speed`."""
    return quiet_s + SERVICE_AHEAD_S * (1 - 1 / speed)


async def _wait_for_bot(call: SimulatedCall, step: Step, since: float) -> None:
    """A polite caller: the bot's answer (if one comes) is heard out before speaking."""
    with contextlib.suppress(SimulatorTimeout):
        await call.wait_for_bot_audio(timeout=step.answer_timeout_s, since=since)
    await call.wait_until_bot_silent(quiet_s=quiet_for(call.speed), timeout=90)


async def _barge_in(call: SimulatedCall, step: Step, since: float) -> None:
    """Wait for the bot's next line to start, then `barge_in_ms` more (on the call clock)."""
    first = await call.wait_for_bot_audio(timeout=30, since=since)
    started = next(t for t, f in call.received_audio if f is first)
    assert step.barge_in_ms is not None
    await call.wait_for_time(started + step.barge_in_ms / 1000)


async def play(
    scenario: Scenario, sim: PiopiySimulator, to_number: str, *, progress: Progress | None = None
) -> str:
    """Place the call and do every step; returns the call id once the call is over."""
    steps = scenario.caller
    call = await sim.place_call(to_number=to_number, from_number=normalize_number(scenario.from_number))
    rate = call.sample_rate
    since = 0.0  # bot audio from this call time on answers the caller's last action
    async with call:
        # All caller audio is made before the first word (in a thread): synthesis on the line's event
        # loop would stall its clock and put the call's recording out of step with its record.
        audio = await asyncio.to_thread(
            lambda: {i: step_audio(scenario, s, rate) for i, s in enumerate(steps, 1) if s.kind in SPEECH}
        )
        try:
            for i, step in enumerate(steps, 1):
                if progress is not None:
                    progress(i, len(steps), step.label)
                if step.barge_in_ms is not None:
                    await _barge_in(call, step, since)
                elif step.wait == "bot" and step.kind not in ("silence", "noise"):
                    await _wait_for_bot(call, step, since)
                if step.kind in SPEECH:
                    await call.say_pcm(audio[i], rate)
                elif step.silence is not None:
                    await call.silence(step.silence)
                elif step.noise is not None:
                    await call.say_pcm(noise(step.noise, step.noise_dbfs, rate, seed=i), rate)
                elif step.dtmf is not None:
                    await call.dtmf(step.dtmf, "/piopiy/dtmf")
                elif step.event is not None:
                    await call.event(step.event, leg=step.leg)
                elif step.hangup:
                    await call.hangup()
                    break
                since = call.now()
            else:
                if progress is not None:
                    progress(len(steps), len(steps), "waiting for the bot to finish")
                with contextlib.suppress(SimulatorTimeout):
                    await call.wait_for_bot_audio(timeout=3.0, since=since)
                await call.wait_until_bot_silent(quiet_s=quiet_for(call.speed, END_QUIET_S), timeout=90)
        except CallEnded:
            pass  # the bot hung up (or the socket closed): the scenario ends here
        call_id = str(httpx.URL(call.ws_url).params["call"])
    return call_id


async def run_scenario(
    scenario: Scenario,
    *,
    url: str,
    secret: str,
    api_key: str,
    out_dir: Path,
    settings: Settings | None = None,
    speed: float | str | None = None,
    progress: Progress | None = None,
) -> ScenarioRun:
    """Play the scenario against the service at `url` (PIOPIY's side with the webhook `secret`), check
    its expectations, write its report (the record and recording read with `api_key`)."""
    chosen = scenario.speed if speed is None else speed
    pace = math.inf if chosen == "max" else float(chosen)
    sim = PiopiySimulator(
        url, webhook_secret=secret, speed=pace, line_noise_dbfs=scenario.line_noise_dbfs,
        rewrite_ws_host=True,  # the stream at `url` too, whatever public host its ws_url names
    )  # fmt: skip
    started = time.monotonic()
    call_id = await play(scenario, sim, number_of(scenario, settings), progress=progress)
    async with httpx.AsyncClient(base_url=url, headers=api_headers(api_key), timeout=30) as http:
        record = await finished_record(http, call_id)
        response = await http.get(f"/api/calls/{call_id}/recording")
    recording = out_dir / "recording.wav" if response.status_code == 200 else None
    await asyncio.to_thread(_save, out_dir, recording, response.content)
    failures = check(scenario.expect, record) if scenario.expect is not None else []
    report = await asyncio.to_thread(  # matplotlib takes a moment: off the event loop
        write_replay_report,
        record,
        out_dir,
        recording=recording,
        failures=failures if scenario.expect is not None else None,
        title=f"{scenario.name} (speed {chosen}): {scenario.description}".rstrip(": "),
    )
    return ScenarioRun(scenario, call_id, record, failures, time.monotonic() - started, report)


def _save(out_dir: Path, recording: Path | None, wav: bytes) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if recording is not None:
        recording.write_bytes(wav)


@dataclass(frozen=True)
class LocalService:
    """A service served in this process: where, and the credentials of PIOPIY's side and of the API."""

    url: str
    webhook_secret: str
    api_key: str


@contextlib.contextmanager
def local_service(
    settings: Settings, data_dir: Path, *, demo_backend: bool = False
) -> Iterator[LocalService]:
    """Serve `settings` in this process on a free loopback port, its records and recordings in
    `data_dir`; with `demo_backend`, the bots' tools and webhooks call a local demo backend. Yields
    where it is, its webhook secret (`settings`' own, see `service_secret`) and an API key valid in
    this process only. `settings` is changed in place (storage, public URL, pointed bots): pass a
    freshly loaded one."""
    from agent.web.app import create_app
    from testkit.backends import FakeToolBackend
    from testkit.servers import serve_in_thread

    storage = settings.service.storage
    storage.url = f"sqlite:///{data_dir / 'hotline.db'}"
    storage.data_dir = data_dir
    storage.recordings_dir = data_dir / "recordings"
    with contextlib.ExitStack() as stack:
        if demo_backend:
            backend = stack.enter_context(FakeToolBackend())
            for name, bot in list(settings.bots.items()):
                settings.bots[name] = backend.point(bot)
                # The demo backend checks no credentials: give tools the env vars their headers name.
                for tool in bot.tools:
                    for template in tool.headers.values():
                        for var in re.findall(r"\{env\.([A-Za-z_][A-Za-z0-9_]*)\}", template):
                            os.environ.setdefault(var, "demo")
        app = create_app(settings)
        url = stack.enter_context(serve_in_thread(app, startup_timeout_s=180))
        settings.service.server.public_url = url  # stream URLs point here
        api_key = new_api_key()
        app.state.runtime.api_keys.allow("local", api_key)
        yield LocalService(url, service_secret(settings), api_key)


def service_secret(settings: Settings) -> str:
    """The webhook secret of a configured service (from its env var, or its data directory)."""
    from agent.security import resolve_secret

    service = settings.service
    return resolve_secret(service.security.webhook_secret_env, settings.path(service.storage.data_dir))


def api_headers(api_key: str) -> dict[str, str]:
    """The headers that open the service's API."""
    return {"Authorization": f"Bearer {api_key}"}


def client_api_key() -> str:
    """The API key to read a running service's records with: HOTLINE_API_KEY (ValueError if unset)."""
    key = os.environ.get("HOTLINE_API_KEY", "").strip()
    if not key:
        raise ValueError(
            "set HOTLINE_API_KEY to an API key of that service (make one there: hotline apikey add replay)"
        )
    return key
