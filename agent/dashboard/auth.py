"""Dashboard login: PBKDF2 password hashes, signed session cookies, CSRF tokens, failed-login limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from agent.security import FailureLimiter

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000
COOKIE = "hotline_session"


def hash_password(password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None) -> str:
    """`pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`, the line to put under `dashboard.users`."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return "$".join((ALGORITHM, str(iterations), _b64(salt), _b64(digest)))


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a hash from `hash_password` (constant-time; False for junk hashes)."""
    try:
        algorithm, iterations, salt, expected = hashed.split("$")
        if algorithm != ALGORITHM or not 1 <= int(iterations) <= 10_000_000:
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
        return hmac.compare_digest(digest, base64.b64decode(expected))
    except (ValueError, TypeError):
        return False


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@dataclass(frozen=True)
class SessionSigner:
    """Signs and checks session cookies (`user|expiry|mac`) and the CSRF tokens bound to them.

    The key derives from the webhook secret, so rotating that secret logs everyone out."""

    key: bytes

    @classmethod
    def from_secret(cls, webhook_secret: str) -> SessionSigner:
        """The signer of a service whose webhook secret is `webhook_secret`."""
        return cls(hmac.new(webhook_secret.encode(), b"hotline dashboard session", hashlib.sha256).digest())

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self.key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()

    def issue(self, user: str, ttl_s: int, now: float | None = None) -> str:
        """A cookie value for `user`, valid for `ttl_s` seconds."""
        expiry = int((now if now is not None else time.time()) + ttl_s)
        body = f"{user}|{expiry}"
        return f"{body}|{self._mac('session', body)}"

    def user_of(self, cookie: str | None, now: float | None = None) -> str | None:
        """The user a cookie value was issued to, or None when it is missing, forged or expired."""
        if not cookie or cookie.count("|") != 2:
            return None
        user, expiry, mac = cookie.split("|")
        if not hmac.compare_digest(mac, self._mac("session", f"{user}|{expiry}")):
            return None
        if not expiry.isdigit() or int(expiry) < (now if now is not None else time.time()):
            return None
        return user

    def csrf_token(self, cookie: str) -> str:
        """The token every dashboard POST of this session carries."""
        return self._mac("csrf", cookie)

    def csrf_ok(self, cookie: str | None, token: str | None) -> bool:
        """Whether `token` is the CSRF token of the session `cookie` (constant-time)."""
        return bool(cookie and token) and hmac.compare_digest(self.csrf_token(cookie or ""), token or "")


LoginLimiter = FailureLimiter
"""At most `limit` failed logins per client address within `window_s` (agent.security.FailureLimiter)."""
