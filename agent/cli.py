"""The `hotline` command: serve, check, call, replay, calls, apikey, passwd."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Sequence

from agent import apikey_cli, calls_cli, replay_cli
from agent.config import Settings, load_settings, normalize_number
from agent.dashboard import passwd
from agent.logs import setup_logging
from agent.yamlfile import ConfigError

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

    replay_cli.add_parser(sub)
    calls_cli.add_parser(sub)
    apikey_cli.add_parser(sub)
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
        return replay_cli.run(settings, args)
    if args.command == "calls":
        return calls_cli.run(settings, args)
    if args.command == "apikey":
        return apikey_cli.run(settings, args)
    return asyncio.run(_call(settings, args))


def _secrets_problem(settings: Settings) -> str | None:
    """What is wrong with the API keys or the session secret set in the environment, if anything."""
    from agent.api_keys import parse_env_keys
    from agent.dashboard.auth import MIN_SECRET_CHARS

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
    from agent.serve import serve

    serve(settings, host, port)
    return 0


async def _call(settings: Settings, args: argparse.Namespace) -> int:
    from agent.runtime import new_call_id, stream_url
    from agent.security import StreamTokens, resolve_secret
    from agent.store import Store
    from agent.telephony.piopiy import bridge_action, redact_tokens, stream_action
    from agent.telephony.piopiy_rest import PiopiyRestClient, PiopiyRestError

    service = settings.service
    bot = settings.bots.get(args.bot)
    if bot is None:
        print(f"no bot named {args.bot!r} (bots: {', '.join(sorted(settings.bots))})", file=sys.stderr)
        return 1
    from_number = args.from_number or settings.number_of_bot(args.bot)
    if from_number is None:
        print(
            f"bot {args.bot!r} has no PIOPIY number in {settings.config_path}: pass --from", file=sys.stderr
        )
        return 1
    appid, secret = os.environ.get(service.piopiy.appid_env), os.environ.get(service.piopiy.secret_env)
    if not appid or not appid.isdigit() or not secret:
        print(f"set {service.piopiy.appid_env} (a number) and {service.piopiy.secret_env}", file=sys.stderr)
        return 1
    try:
        to_number = normalize_number(args.to)
        from_number = normalize_number(from_number)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1

    data_dir = settings.path(service.storage.data_dir)
    tokens = StreamTokens(
        resolve_secret(service.security.stream_secret_env, data_dir).encode(),
        service.security.stream_token_ttl_s,
    )
    call_id = new_call_id()
    url, _ = stream_url(
        service.server.ws_base,
        tokens,
        call_id=call_id,
        bot=args.bot,
        from_number=from_number,
        to_number=to_number,
    )
    opts = bot.stream
    pcmo = [
        stream_action(
            url, listen_mode=opts.listen_mode, voice_quality=opts.voice_quality, stream_on_answer=True
        )
    ]
    if args.then_transfer:
        dept = bot.departments.get(args.then_transfer)
        if dept is None:
            print(f"bot {args.bot!r} has no department {args.then_transfer!r}", file=sys.stderr)
            return 1
        pcmo.append(
            bridge_action(
                from_number, dept.numbers, timeout=dept.timeout, loop=dept.loop, ring_type=dept.ring_type
            )
        )

    store = Store(service.storage.url, base_dir=settings.base_dir)
    await store.init()
    try:
        now = time.time()
        await store.create_call(
            id=call_id,
            bot=args.bot,
            direction="outbound",
            from_number=from_number,
            to_number=to_number,
            status="dialing",
            started_at=now,
            sample_rate=opts.voice_quality,
        )
        async with PiopiyRestClient(
            appid=int(appid),
            secret=secret,
            base_url=service.piopiy.rest_base_url,
            action_base_url=service.piopiy.action_base_url,
            region=service.piopiy.region,
        ) as client:
            try:
                result = await client.make_call(
                    to=to_number,
                    from_number=from_number,
                    pcmo=pcmo,
                    duration=args.duration,
                    extra_params={"call_id": call_id, "bot": args.bot},
                )
            except PiopiyRestError as exc:
                await store.update_call(
                    call_id, status="failed", end_reason="make_call_failed", ended_at=time.time()
                )
                await store.add_action(
                    call_id, "make_call", {"to": to_number}, {"error": str(exc)}, time.time()
                )
                print(f"call failed: {exc}", file=sys.stderr)
                return 1
        await store.update_call(call_id, request_id=result.request_id)
        await store.add_action(
            call_id, "make_call", redact_tokens(pcmo), {"cli": True, "request_id": result.request_id}, now
        )
    finally:
        await store.close()
    print(f"calling +{to_number} from +{from_number} with bot {args.bot}")
    print(f"call {call_id}, PIOPIY request {result.request_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
