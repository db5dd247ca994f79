"""`hotline replay` carried out: play a call scenario (or a call recording) against the service, report.

The service's CLI (agent/cli/replay.py) holds the arguments and imports this module only when run.

    hotline replay tests/calls/angry_caller.yaml                 # in-process service, report in var/replays/
    hotline replay call.wav --bot support_desk --speed 1         # a recording's caller channel, again
    hotline replay angry.yaml --expect stricter.yaml --url http://127.0.0.1:8080
    hotline replay tests/calls/new.yaml --record-from http://127.0.0.1:8080 c_5f0c…   # make a fixture

With --url or --record-from, the service's records are read through its API with the key in
HOTLINE_API_KEY (`hotline apikey add replay` on that service); PIOPIY's side of a call uses the
webhook secret of this config (its env var, or var/secrets/).

Exit status: 0 when every expectation holds, 1 when one fails (the diff is printed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
from pathlib import Path

import httpx

from agent.config.settings import Settings
from agent.config.yamlfile import ConfigError, load_yaml
from agent.records.words import transcript_text
from pipelines.audio import write_wav
from testkit.caller_voice import MissingSpeech
from testkit.expect import Expectations, format_failures
from testkit.fixture_from_call import write_fixture
from testkit.line_audio import SimulatorError
from testkit.replay import caller_channel
from testkit.scenario import Scenario, Step, load_scenario
from testkit.scenario_run import client_api_key, local_service, run_scenario, service_secret

USAGE_ERROR = 2
"""Exit status for a call that could not be played or a bad argument (argparse's own convention)."""


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out `hotline replay`."""
    if args.record_from:
        url, call_id = args.record_from
        try:
            api_key = client_api_key()
        except ValueError as exc:
            print(f"hotline replay: {exc}", file=sys.stderr)
            return USAGE_ERROR
        written = asyncio.run(write_fixture(url, api_key, call_id, Path(args.call)))
        print(f"wrote {written} (and its caller clips); edit its expect: section, then replay it")
        return 0
    try:
        scenario = _scenario(Path(args.call), args)
        if args.url:
            client_api_key()  # before the call is placed: a clear error, not a 401 after it
    except (ConfigError, ValueError, OSError) as exc:
        print(f"hotline replay: {exc}", file=sys.stderr)
        return USAGE_ERROR
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else settings.path(Path("var/replays")) / f"{scenario.name}-{stamp}"
    try:
        return asyncio.run(_replay(settings, scenario, args, out))
    except (SimulatorError, httpx.HTTPError, MissingSpeech, ValueError) as exc:
        print(f"\nhotline replay: the call could not be played: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _scenario(path: Path, args: argparse.Namespace) -> Scenario:
    if path.suffix.lower() == ".wav":
        if not args.bot:
            raise ValueError("replaying a recording needs --bot NAME (the bot that answers it)")
        pcm, rate = caller_channel(path)
        clip = Path(tempfile.mkdtemp(prefix="hotline-replay-")) / "caller.wav"
        write_wav(clip, pcm, rate)
        scenario = Scenario.model_validate(
            {"bot": args.bot, "caller": [Step(audio=str(clip), wait="none")]}
        )  # the whole caller side at its original times: it already waited for the bot back then
    else:
        scenario = load_scenario(path)
        if args.bot:
            scenario = scenario.model_copy(update={"bot": args.bot, "to": None})
    if args.expect:
        doc = load_yaml(Path(args.expect))
        data = doc.data.get("expect", doc.data) if isinstance(doc.data, dict) else doc.data
        scenario = scenario.model_copy(update={"expect": Expectations.model_validate(data)})
    if args.speed not in (None, "max"):
        float(args.speed)  # ValueError: a clear usage error
    return scenario


async def _replay(settings: Settings, scenario: Scenario, args: argparse.Namespace, out: Path) -> int:
    bar = ProgressBar(scenario.name)
    if args.url:
        run = await run_scenario(
            scenario, url=args.url, secret=service_secret(settings), api_key=client_api_key(),
            out_dir=out, settings=settings, speed=args.speed, progress=bar,
        )  # fmt: skip
    else:
        data = out / "service"
        data.mkdir(parents=True, exist_ok=True)
        print(f"starting the service in-process (models load once, ~10 s); records in {data}")
        with local_service(settings, data, demo_backend=scenario.backend == "demo") as local:
            run = await run_scenario(
                scenario, url=local.url, secret=local.webhook_secret, api_key=local.api_key,
                out_dir=out, settings=settings, speed=args.speed, progress=bar,
            )  # fmt: skip
    bar.done(run.seconds)
    print(transcript_text(run.record))
    print()
    if scenario.expect is None:
        print("no expectations (add an expect: section, or --expect FILE)")
    elif run.passed:
        print("✓ every expectation met")
    else:
        print(format_failures(run.failures))
    print(f"report: {run.report.get('html')}  timeline: {run.report.get('timeline')}")
    return 0 if run.passed else 1


class ProgressBar:
    """One status line on stderr, redrawn in place on a terminal, plain lines otherwise."""

    WIDTH = 24

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()

    def __call__(self, step: int, steps: int, what: str) -> None:
        filled = round(self.WIDTH * step / steps)
        line = f"{self.name} [{'#' * filled}{'.' * (self.WIDTH - filled)}] {step}/{steps} {what}"
        if self.tty:
            print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    def done(self, seconds: float) -> None:
        """The call is over."""
        end = "\n" if self.tty else ""
        print(f"{end}{self.name}: call done in {seconds:.1f} s", file=sys.stderr, flush=True)
