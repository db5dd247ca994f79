"""Dashboard login: PBKDF2 password hashes, server-side sessions in signed cookies, CSRF tokens, limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from agent.records.access_store import AccessStore
from agent.security import FailureLimiter

ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 600_000
COOKIE = "hotline_session"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
"""What `secrets.token_urlsafe(32)` makes: the only session ids we issue."""
MAC = re.compile(r"[0-9a-f]{64}")
MIN_SECRET_CHARS = 16


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
    """Signs and checks session cookies (`<session id>.<mac>`) and the CSRF tokens bound to them.

    The key is the dashboard's own (HOTLINE_SESSION_SECRET): no other secret of the service can sign a
    cookie, and rotating it logs everyone out. A signature proves only that we issued the id; whether
    the session is still open is the store's to say (`DashboardSessions`)."""

    key: bytes

    @classmethod
    def from_secret(cls, session_secret: str) -> SessionSigner:
        """The signer of a service whose dashboard session secret is `session_secret` (16+ characters)."""
        if len(session_secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the dashboard session secret must be at least {MIN_SECRET_CHARS} characters")
        return cls(hmac.new(session_secret.encode(), b"hotline dashboard session", hashlib.sha256).digest())

    def _mac(self, purpose: str, text: str) -> str:
        return hmac.new(self.key, f"{purpose}|{text}".encode(), hashlib.sha256).hexdigest()

    def cookie(self, session_id: str) -> str:
        """The cookie value carrying `session_id`."""
        return f"{session_id}.{self._mac('session', session_id)}"

    def session_id(self, cookie: str | None) -> str | None:
        """The session id a cookie carries, or None when it is missing, malformed or not signed by us."""
        session_id, dot, mac = (cookie or "").partition(".")
        # Shape first: compare_digest raises on non-ASCII text, and junk need not be hashed.
        if not dot or not SESSION_ID.fullmatch(session_id) or not MAC.fullmatch(mac):
            return None
        return session_id if hmac.compare_digest(mac, self._mac("session", session_id)) else None

    def csrf_token(self, session_id: str) -> str:
        """The token every dashboard POST of this session carries."""
        return self._mac("csrf", session_id)

    def csrf_ok(self, session_id: str, token: str | None) -> bool:
        """Whether `token` is the CSRF token of the session (constant-time; any text is safe to pass)."""
        presented = (token or "").encode("utf-8", "replace")
        return bool(token) and hmac.compare_digest(self.csrf_token(session_id).encode(), presented)


@dataclass(frozen=True)
class SignedIn:
    """A cookie whose session is open: its user and session id."""

    user: str
    session_id: str


class DashboardSessions:
    """Dashboard logins recorded server-side: a signed cookie names a session, the store says whether
    it is still open (expiry and logout hold on every worker sharing the store)."""

    def __init__(self, signer: SessionSigner, access: AccessStore) -> None:
        self.signer = signer
        self.access = access

    async def open(self, user: str, ttl_s: int, now: float | None = None) -> str:
        """Log `user` in for `ttl_s` seconds; returns the cookie value."""
        session_id = secrets.token_urlsafe(32)
        now = now if now is not None else time.time()
        await self.access.open_session(_hash(session_id), user, now, ttl_s)
        return self.signer.cookie(session_id)

    async def signed_in(self, cookie: str | None, ttl_s: int, now: float | None = None) -> SignedIn | None:
        """Who a cookie logs in, or None: forged, logged out, past its expiry or older than `ttl_s` (the
        setting now), whatever the cookie itself claims. The store may raise when it is unreachable."""
        session_id = self.signer.session_id(cookie)
        if session_id is None:
            return None
        now = now if now is not None else time.time()
        user = await self.access.session_user(_hash(session_id), now, ttl_s)
        return SignedIn(user, session_id) if user is not None else None

    async def close(self, session_id: str) -> None:
        """Log the session out."""
        await self.access.close_session(_hash(session_id))


def _hash(session_id: str) -> str:
    # The store keeps hashes: a copy of the database holds no live session ids.
    return hashlib.sha256(session_id.encode()).hexdigest()


LoginLimiter = FailureLimiter
"""At most `limit` failed logins per client address within `window_s` (agent.security.FailureLimiter)."""
