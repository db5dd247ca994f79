"""Who may talk to us: signed, expiring stream tokens for PIOPIY's socket, and the webhook secret."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CALL_ID_PATTERN = r"c_[0-9a-f]{32}"
"""Every call id we mint (`c_` and 32 hex digits). Ids name files (recordings, exports), so each
boundary that takes one from outside checks it against this pattern: nothing else reaches a path."""
_CALL_ID = re.compile(CALL_ID_PATTERN)
_CALL_ID_PREFIX = re.compile(r"c_[0-9a-f]{0,32}")


def is_call_id(value: object) -> bool:
    """Whether `value` is a call id as we mint them (see CALL_ID_PATTERN)."""
    return isinstance(value, str) and _CALL_ID.fullmatch(value) is not None


def is_call_id_prefix(value: object) -> bool:
    """Whether `value` is the start of a well-formed call id (what `hotline calls show` may look up)."""
    return isinstance(value, str) and _CALL_ID_PREFIX.fullmatch(value) is not None


class TokenError(Exception):
    """A stream token that must not open a call; the message says why (never the token itself)."""


class StreamTokens:
    """HMAC-SHA256 tokens bound to call id + bot + expiry + the call's numbers; each opens one stream.

    Single use is kept twice: in this process's memory (the fast path) and in the store, where the stream
    claims its call (telephony/socket.py): a token replayed after a restart or on another worker is refused
    there. The process also remembers which calls it issued tokens for (`issued_here`).
    """

    def __init__(self, secret: bytes, ttl_s: int, *, remember: int = 100_000) -> None:
        if len(secret) < 16:
            raise ValueError("the stream secret must be at least 16 bytes")
        self._secret = secret
        self.ttl_s = ttl_s
        self._used: OrderedDict[str, int] = OrderedDict()
        self._issued: OrderedDict[str, int] = OrderedDict()  # call id → expiry of its token
        self._remember = remember

    def sign(self, call_id: str, bot: str, exp: int, caller: str = "", called: str = "") -> str:
        """The token for these values (the same values always give the same token)."""
        # JSON, not a separator: no value can shift into the next one's place.
        msg = json.dumps([call_id, bot, exp, caller, called]).encode()
        digest = hmac.new(self._secret, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(
        self, call_id: str, bot: str, caller: str = "", called: str = "", *, now: float | None = None
    ) -> tuple[int, str]:
        """A fresh (expiry, token) pair for this call and its caller and called numbers."""
        exp = int((now if now is not None else time.time()) + self.ttl_s)
        self._remember_one(self._issued, call_id, exp, now)
        return exp, self.sign(call_id, bot, exp, caller, called)

    def issued_here(self, call_id: str, *, now: float | None = None) -> bool:
        """Whether this process issued a token for this call that has not expired yet."""
        exp = self._issued.get(call_id)
        return exp is not None and exp >= (now if now is not None else time.time())

    def call_id_for(self, cmiuuid: str) -> str:
        """Our call id for PIOPIY's call uuid: the same on every worker (they share the secret) and for
        every retry of answer_url, so a retried call finds its row; unguessable without the secret."""
        digest = hmac.new(self._secret, b"call-id\n" + cmiuuid.encode(), hashlib.sha256).hexdigest()
        return "c_" + digest[:32]

    def verify(
        self,
        call_id: str,
        bot: str,
        exp: str | int,
        token: str,
        caller: str = "",
        called: str = "",
        *,
        now: float | None = None,
    ) -> None:
        """Raise TokenError unless we issued this token for this call, bot and numbers, unexpired and
        not used in this process yet."""
        if not call_id or not bot or not token:
            raise TokenError("missing call, bot or token")
        try:
            expiry = int(exp)
        except (TypeError, ValueError):
            raise TokenError("malformed expiry") from None
        expected = self.sign(call_id, bot, expiry, caller, called).encode()
        # As bytes: compare_digest refuses str with non-ASCII characters (a TypeError, not a refusal).
        if not hmac.compare_digest(expected, token.encode(errors="replace")):
            raise TokenError("bad signature")
        current = now if now is not None else time.time()
        if expiry < current:
            raise TokenError("expired")
        if token in self._used:
            raise TokenError("token already used")
        self._remember_one(self._used, token, expiry, current)

    def _remember_one(self, seen: OrderedDict[str, int], key: str, expiry: int, now: float | None) -> None:
        # Expired entries fail the expiry check anyway; keep the sets small.
        current = now if now is not None else time.time()
        while seen:
            oldest, oldest_expiry = next(iter(seen.items()))
            if oldest_expiry >= current:
                break
            del seen[oldest]
        seen[key] = expiry
        if len(seen) > self._remember:
            seen.popitem(last=False)


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
