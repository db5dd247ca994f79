"""`notify` actions: POST a call's state to a webhook of the bot's YAML, off the call's path.

A notification never holds the call up: it runs as a background task of the worker (it outlives the
call when a rule fires just before a hangup), retries network errors, 5xx and 429 with a short backoff,
and reports how it went; the caller hears nothing of it. Bodies are signed when the webhook names a
secret: `X-Hotline-Timestamp: <unix seconds>` and `X-Hotline-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<body>">`, so the receiver can check both origin and freshness.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from agent.config.actions import Webhook
from agent.dialogue.scripted import TemplateError, render

log = logging.getLogger(__name__)

BACKOFF_S = (0.5, 1.0, 2.0, 4.0, 8.0)
USER_AGENT = "Hotline-Notify/1"


@dataclass(frozen=True)
class Delivery:
    """How one notification went (kept in the call record)."""

    webhook: str
    ok: bool
    attempts: int
    ms: int
    status: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the record and live events."""
        return {k: v for k, v in vars(self).items() if v is not None}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Notifier:
    """Sends `notify` bodies over one shared HTTP client."""

    def __init__(self, http: httpx.AsyncClient, env: Mapping[str, str] = os.environ) -> None:
        self.http = http
        self.env = env

    async def send(self, name: str, hook: Webhook, payload: dict[str, Any]) -> Delivery:
        """POST `payload` to the webhook, with retries; never raises for delivery problems."""
        started = time.monotonic()
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        try:
            headers = self._headers(hook, body)
        except ValueError as exc:
            return Delivery(name, False, 0, 0, error=str(exc))
        attempts, status, error = 0, None, None
        for attempt in range(hook.retries + 1):
            attempts = attempt + 1
            try:
                response = await self.http.post(
                    hook.url, content=body, headers=headers, timeout=hook.timeout_s
                )
                status, error = response.status_code, None
                if response.status_code < 400:
                    break
                error = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # the receiver refuses this body: retrying will not change its mind
            except httpx.TimeoutException:
                status, error = None, "timeout"
            except httpx.HTTPError as exc:
                status, error = None, type(exc).__name__
            if attempt < hook.retries:
                await asyncio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
        ms = round((time.monotonic() - started) * 1000)
        if error is not None:
            log.warning("notify %s failed after %d attempts: %s", name, attempts, error)
        return Delivery(name, error is None, attempts, ms, status, error)

    def _headers(self, hook: Webhook, body: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        for header, template in hook.headers.items():
            try:
                headers[header] = render(template, {"env": self.env})
            except (TemplateError, ValueError, IndexError):
                raise ValueError(f"header {header} needs an environment variable that is not set") from None
        if hook.secret_env is not None:
            secret = self.env.get(hook.secret_env)
            if not secret:
                raise ValueError(f"the signing secret {hook.secret_env} is not set")
            timestamp = str(int(time.time()))
            headers["X-Hotline-Timestamp"] = timestamp
            headers["X-Hotline-Signature"] = sign(secret, timestamp, body)
        return headers
