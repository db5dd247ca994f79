"""Who may talk to us: signed, expiring stream tokens for PIOPIY's socket, and the webhook secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
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
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a refusal).
        if not hmac.compare_digest(self._sign(call_id, bot, expiry).encode(), token.encode(errors="replace")):
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


@dataclass
class FailureLimiter:
    """At most `limit` failures (logins, secrets, stream tokens) per client address within `window_s`;
    then the address is refused until they age out."""

    limit: int = 5
    window_s: float = 300.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def blocked(self, client: str, now: float | None = None) -> bool:
        """Whether this client has used up its failures."""
        return len(self._recent(client, now)) >= self.limit

    def failed(self, client: str, now: float | None = None) -> None:
        """Count a failure."""
        self._recent(client, now).append(now if now is not None else time.time())

    def _recent(self, client: str, now: float | None) -> deque[float]:
        now = now if now is not None else time.time()
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        if len(self._failures) > 10_000:  # many addresses: forget the quiet ones
            for quiet in [c for c, d in self._failures.items() if not d and c != client]:
                del self._failures[quiet]
        return failures


class AddressList:
    """Addresses (IPs or CIDR networks) allowed to reach a surface; an empty list allows every address."""

    def __init__(self, entries: list[str] | tuple[str, ...]) -> None:
        self.networks = tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries)

    def allows(self, host: str | None) -> bool:
        """Whether `host` (a client address as the server saw it) is on the list."""
        if not self.networks:
            return True
        try:
            address = ipaddress.ip_address(host or "")
        except ValueError:
            return False  # no address (a unix socket, a test client): not provably on the list
        return any(address in network for network in self.networks)
