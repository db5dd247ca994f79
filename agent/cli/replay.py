"""`hotline replay`'s arguments; the command itself is testkit's (the dev set), imported only when it runs.

    hotline replay tests/calls/angry_caller.yaml                 # in-process service, report in var/replays/
    hotline replay call.wav --bot support_desk --speed 1         # a recording's caller channel, again

Without the dev set installed, `hotline replay` says so in one line and exits 2 (testkit/replay_cli.py
carries out the command and documents its exit status).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from agent.config.settings import Settings

USAGE_ERROR = 2
NEEDS_DEV_SET = "hotline replay needs the dev set: make setup-dev"


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
    """Carry out `hotline replay` with testkit's replay, or say in one line that it needs the dev set."""
    try:
        # The one import of testkit under agent/, lazy so the service runs without the dev set
        # (tests/test_service_without_testkit.py allows this one only).
        from testkit import replay_cli
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "testkit":
            raise  # testkit is there but something it needs is not: a bug to see, not to hide
        print(NEEDS_DEV_SET, file=sys.stderr)
        return USAGE_ERROR
    return replay_cli.run(settings, args)
