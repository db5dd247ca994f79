"""`hotline replay`: play a call scenario (or a call recording) against the service and report on it.

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
from typing import TYPE_CHECKING, Any

import httpx

from agent.config import Settings
from agent.testing.caller_voice import MissingSpeech
from agent.testing.simulated_line import SimulatorError
from agent.yamlfile import ConfigError

if TYPE_CHECKING:
    from agent.testing.scenario import Scenario

USAGE_ERROR = 2


def add_parser(sub: Any) -> None:
    """The `replay` subcommand's arguments."""
    replay = sub.add_parser(
        "replay",
        help="play a call scenario or recording against the service; report and check expectations",
    )
    replay.add_argument("call", help="a scenario YAML (tests/calls/*.yaml) or a call recording WAV")
    replay.add_argument("--bot", help="the bot to call (overrides the scenario's; needed for a WAV)")
    replay.add_argument("--expect", metavar="FILE", help="expectations YAML (overrides the scenario's)")
    replay.add_argument("--speed", default=None, help="caller pacing: 1, 2 or max (default: the scenario's)")
    replay.add_argument(
        "--url", help="a running service (default: serve this config in-process); needs HOTLINE_API_KEY"
    )
    replay.add_argument("--out", metavar="DIR", help="report directory (default: var/replays/NAME-TIME)")
    replay.add_argument(
        "--record-from",
        nargs=2,
        metavar=("URL", "CALL_ID"),
        help="write CALL as a new scenario from a stored call of the service at URL (needs "
        "HOTLINE_API_KEY), then stop",
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Carry out `hotline replay`."""
    from agent.testing.scenario_run import client_api_key

    if args.record_from:
        from agent.testing.fixture_from_call import write_fixture

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
    from agent.testing.expect import Expectations
    from agent.testing.replay import caller_channel
    from agent.testing.scenario import Scenario, Step, load_scenario
    from agent.yamlfile import load_yaml
    from pipelines.audio import write_wav

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
    from agent.testing.expect import format_failures
    from agent.testing.report import transcript_text
    from agent.testing.scenario_run import client_api_key, local_service, run_scenario, service_secret

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
