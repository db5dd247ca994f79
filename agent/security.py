"""Who may talk to us: signed, expiring stream tokens for PIOPIY's socket, and the webhook secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections import OrderedDict
from pathlib import Path

log = logging.getLogger(__name__)


class TokenError(Exception):
    """A stream token that must not open a call; the message says why (never the token itself)."""


class StreamTokens:
    """HMAC-SHA256 tokens bound to call id + bot + expiry; each opens one stream, once."""

    def __init__(self, secret: bytes, ttl_s: int, *, remember: int = 100_000) -> None:
        if len(secret) < 16:
            raise ValueError("the stream secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._used: OrderedDict[str, int] = OrderedDict()
        self._remember = remember

    def _sign(self, call_id: str, bot: str, exp: int) -> str:
        msg = f"{call_id}\n{bot}\n{exp}".encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, call_id: str, bot: str, *, now: float | None = None) -> tuple[int, str]:
        """A fresh (expiry, token) pair for this call."""
        exp = int((now if now is not None else time.time()) + self.ttl_s)
        return exp, self._sign(call_id, bot, exp)

    def verify(self, call_id: str, bot: str, exp: str | int, token: str, *, now: float | None = None) -> None:
        """Raise TokenError unless we issued this token for this call and bot, unexpired and unused."""
        if not call_id or not bot or not token:
            raise TokenError("missing call, bot or token")
        try:
            expiry = int(exp)
        except (TypeError, ValueError):
            raise TokenError("malformed expiry") from None
        if not hmac.compare_digest(self._sign(call_id, bot, expiry), token):
            raise TokenError("bad signature")
        current = now if now is not None else time.time()
        if expiry < current:
            raise TokenError("expired")
        self._forget_expired(current)
        if token in self._used:
            raise TokenError("token already used")
        self._used[token] = expiry
        if len(self._used) > self._remember:
            self._used.popitem(last=False)

    def _forget_expired(self, now: float) -> None:
        # Expired tokens fail the expiry check anyway; keep the used-set small.
        while self._used:
            token, expiry = next(iter(self._used.items()))
            if expiry >= now:
                break
            del self._used[token]


def webhook_secret_ok(expected: str, presented: str | None) -> bool:
    """Constant-time comparison of the configured webhook secret with what a request carried."""
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


def resolve_secret(env_name: str, data_dir: Path) -> str:
    """The secret in env var `env_name`; without one, a generated secret kept in data_dir (mode 0600).

    A generated secret keeps `make run` working out of the box and stable across restarts; production
    sets the env var. The value is never logged.
    """
    value = os.environ.get(env_name)
    if value:
        return value
    path = data_dir / "secrets" / env_name
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker generated it first: use theirs
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")
    log.warning("%s is not set: generated one and stored it in %s", env_name, path)
    return value
