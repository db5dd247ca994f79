"""Who may call a route: the address first (failure limits, platform addresses), then its credential:
an API key for /api/* and /metrics, the webhook secret for the carrier's webhooks, nothing else."""

from __future__ import annotations

import logging

from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError

from agent.security import webhook_secret_ok
from agent.web.api_keys import presented_key
from agent.web.errors import HttpError
from agent.worker.runtime import Runtime

log = logging.getLogger(__name__)


def runtime_of(request: Request) -> Runtime:
    """The worker's runtime, as the app's lifespan started it."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def admitted(request: Request, *, platform: bool) -> tuple[Runtime, str | None]:
    """The runtime and the client's address, unless the address is refused before any credential is
    read: too many failures lately (429), or a `platform` webhook from outside security.platform_ips
    (403)."""
    rt = runtime_of(request)
    host = request.client.host if request.client else None
    refusal = rt.refusal(host, platform=platform)
    if refusal == "too_many_failures":
        raise HttpError(429, "too many failed attempts", "wait a minute, then send the right credentials")
    if refusal == "not_platform":
        log.warning("refused %s %s from %s: not a platform address", request.method, request.url.path, host)
        raise HttpError(403, "forbidden", "this address may not call PIOPIY webhooks (security.platform_ips)")
    return rt, host


async def api_client(request: Request) -> Runtime:
    """/api/* and /metrics need an API key (`Authorization: Bearer KEY` or `X-Hotline-Api-Key: KEY`):
    one of security.api_keys_env, or an active one of `hotline apikey`. The webhook secret is no key."""
    rt, host = admitted(request, platform=False)
    where = f"{request.method} {request.url.path}"
    try:
        name = await rt.api_keys.name_of(presented_key(request.headers))
    except (SQLAlchemyError, OSError) as exc:
        log.warning("%s: API key not checked, the store is unreachable (%s)", where, type(exc).__name__)
        raise HttpError(503, "the store is unreachable", "API keys from the environment still work") from None
    if name is None:
        rt.auth_failed(host, "api")
        log.warning("refused %s from %s: missing, wrong or revoked API key", where, host)
        if _carries_webhook_secret(request, rt):  # an old client: say what changed
            detail = "the webhook secret opens /piopiy/* only: send an API key (hotline apikey add NAME)"
        else:
            detail = (
                "send an API key as Authorization: Bearer KEY or X-Hotline-Api-Key (hotline apikey add NAME)"
            )
        raise HttpError(401, "unauthorized", detail)
    return rt


def webhook_client(request: Request) -> Runtime:
    """The carrier's webhooks need the webhook secret, and nothing else opens them."""
    rt, host = admitted(request, platform=True)
    if not _carries_webhook_secret(request, rt):
        rt.auth_failed(host, "webhook")
        log.warning("refused %s %s from %s: missing or wrong secret", request.method, request.url.path, host)
        raise HttpError(401, "unauthorized", "send the webhook secret as X-Hotline-Secret or ?secret=")
    return rt


def _webhook_secret_of(request: Request) -> str | None:
    """What a request presents as the webhook secret: X-Hotline-Secret, ?secret=, or a Bearer token."""
    presented = request.headers.get("x-hotline-secret") or request.query_params.get("secret")
    auth = request.headers.get("authorization", "")
    if presented is None and auth.lower().startswith("bearer "):
        presented = auth[7:].strip()
    return presented


def _carries_webhook_secret(request: Request, rt: Runtime) -> bool:
    return webhook_secret_ok(rt.webhook_secret, _webhook_secret_of(request))
