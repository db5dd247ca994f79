"""`hotline call`: an outbound call through PIOPIY's REST API, streamed to a bot from its first ring."""

from __future__ import annotations

import os
import sys
import time

from agent.config.base import normalize_number
from agent.config.settings import Settings
from agent.records.store import Store
from agent.security import StreamTokens, resolve_secret
from agent.telephony.piopiy.codec import bridge_action, redact_tokens, stream_action
from agent.telephony.piopiy.rest import PiopiyRestClient, PiopiyRestError
from agent.worker.runtime import new_call_id, stream_url


async def place_call(
    settings: Settings,
    bot_name: str,
    to: str,
    *,
    from_number: str | None = None,
    then_transfer: str | None = None,
    duration: int = 5400,
) -> int:
    """Dial `to` for bot `bot_name` (from its own number unless `from_number`), optionally bridging
    to a department once the bot is done; the call's row is written first. Returns an exit status
    (problems are printed to stderr)."""
    service = settings.service
    bot = settings.bots.get(bot_name)
    if bot is None:
        print(f"no bot named {bot_name!r} (bots: {', '.join(sorted(settings.bots))})", file=sys.stderr)
        return 1
    from_number = from_number or settings.number_of_bot(bot_name)
    if from_number is None:
        print(
            f"bot {bot_name!r} has no PIOPIY number in {settings.config_path}: pass --from", file=sys.stderr
        )
        return 1
    appid, secret = os.environ.get(service.piopiy.appid_env), os.environ.get(service.piopiy.secret_env)
    if not appid or not appid.isdigit() or not secret:
        print(f"set {service.piopiy.appid_env} (a number) and {service.piopiy.secret_env}", file=sys.stderr)
        return 1
    try:
        to_number = normalize_number(to)
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
        bot=bot_name,
        from_number=from_number,
        to_number=to_number,
    )
    opts = bot.stream
    pcmo = [
        stream_action(
            url, listen_mode=opts.listen_mode, voice_quality=opts.voice_quality, stream_on_answer=True
        )
    ]
    if then_transfer:
        dept = bot.departments.get(then_transfer)
        if dept is None:
            print(f"bot {bot_name!r} has no department {then_transfer!r}", file=sys.stderr)
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
            bot=bot_name,
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
                    duration=duration,
                    extra_params={"call_id": call_id, "bot": bot_name},
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
    print(f"calling +{to_number} from +{from_number} with bot {bot_name}")
    print(f"call {call_id}, PIOPIY request {result.request_id}")
    return 0
