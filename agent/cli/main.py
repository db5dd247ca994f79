"""The `hotline` command: serve, check, call, replay, calls, apikey, passwd."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from agent.cli import apikey, calls, replay
from agent.config.settings import Settings, load_settings
from agent.config.yamlfile import ConfigError
from agent.dashboard import passwd
from agent.worker.logs import setup_logging

log = logging.getLogger("hotline")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `hotline` console script."""
    parser = argparse.ArgumentParser(prog="hotline", description="Voice AI agent for PIOPIY phone calls.")
    parser.add_argument(
        "--config", default=os.environ.get("HOTLINE_CONFIG", "config.yaml"), help="config.yaml path"
    )
    parser.add_argument("--log-level", default=os.environ.get("HOTLINE_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=os.environ.get("HOTLINE_LOG_FORMAT", "text"),
        help="json: one JSON object per line, for log collectors (every line has the call id)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)

    sub.add_parser("check", help="validate config.yaml and every bot; exit 1 on any error")

    call = sub.add_parser("call", help="place an outbound call through PIOPIY's REST API")
    call.add_argument("--to", required=True, help="number to call")
    call.add_argument("--bot", required=True, help="bot that talks to the callee")
    call.add_argument("--from", dest="from_number", help="your PIOPIY number (default: the bot's number)")
    call.add_argument("--duration", type=int, default=5400, help="maximum call length in seconds")
    call.add_argument(
        "--then-transfer", metavar="DEPT", help="bridge to this department when the stream ends"
    )

    replay.add_parser(sub)
    calls.add_parser(sub)
    apikey.add_parser(sub)
    passwd.add_parser(sub)

    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.command == "passwd":  # needs no config
        return passwd.run(args)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found.", file=sys.stderr)
        return 1
    if args.command in ("check", "serve") and (env_problem := _secrets_problem(settings)):
        print(env_problem, file=sys.stderr)  # at once, not after the models have loaded
        return 1
    if args.command == "check":
        return _check(settings)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "replay":
        return replay.run(settings, args)
    if args.command == "calls":
        return calls.run(settings, args)
    if args.command == "apikey":
        return apikey.run(settings, args)
    return asyncio.run(_call(settings, args))


def _secrets_problem(settings: Settings) -> str | None:
    """What is wrong with the API keys or the session secret set in the environment, if anything."""
    from agent.dashboard.auth import MIN_SECRET_CHARS
    from agent.web.api_keys import parse_env_keys

    security = settings.service.security
    try:
        parse_env_keys(os.environ.get(security.api_keys_env, ""), security.api_keys_env)
    except ValueError as exc:
        return str(exc)
    session_secret = os.environ.get(security.session_secret_env)
    if session_secret and len(session_secret) < MIN_SECRET_CHARS:
        return f"{security.session_secret_env} must be at least {MIN_SECRET_CHARS} characters"
    return None


def _check(settings: Settings) -> int:
    from agent.escalation.lint import rule_warnings

    service = settings.service
    for number, bot in sorted(service.numbers.items()):
        b = settings.bots[bot]
        print(
            f"  +{number} → {bot} ({settings.files[bot].name}): {len(b.intents)} intents, "
            f"{len(b.departments)} departments, {len(b.tools)} tools, {len(b.escalation.rules)} rules"
        )
        for warning in rule_warnings(b):
            print(f"    warning ({settings.files[bot].name}): {warning}")
    unrouted = sorted(set(settings.bots) - set(service.numbers.values()))
    if unrouted:
        print(f"  bots with no number: {', '.join(unrouted)}")
    mode = (
        f"LLM at {service.llm.base_url}" if service.llm.base_url else "scripted (no LLM endpoint configured)"
    )
    print(f"OK: {settings.config_path} and {len(settings.bots)} bots are valid; dialogue: {mode}.")
    return 0


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    from agent.worker.serve import serve

    serve(settings, host, port)
    return 0


async def _call(settings: Settings, args: argparse.Namespace) -> int:
    from agent.telephony.carriers import place_call

    return await place_call(
        settings,
        args.bot,
        args.to,
        from_number=args.from_number,
        then_transfer=args.then_transfer,
        duration=args.duration,
    )


if __name__ == "__main__":
    sys.exit(main())
