"""API keys: named, revocable keys that open /api/* and /metrics (never PIOPIY's webhooks).

Keys come from the store (`hotline apikey add NAME`, revocable at once on every worker) or from the
environment (`HOTLINE_API_KEYS=name:key,name:key`, checked without the store: a metrics scraper keeps
working while the database is away). Only SHA-256 hashes are kept; keys are random, so no slow hash is
needed to make guessing hopeless.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping

from agent.records.access_store import AccessStore

KEY_PREFIX = "hk_"
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_KEY_CHARS = 24
"""A key set in the environment shorter than this is refused at start-up (too easy to guess)."""


def new_api_key() -> str:
    """A fresh key: `hk_` and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The hex SHA-256 a key is kept and looked up as."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def parse_env_keys(text: str, env_name: str) -> dict[str, str]:
    """`name:key,name:key` → name → key hash. ValueError names the bad entry by position and name,
    never by its key."""
    keys: dict[str, str] = {}
    for position, entry in enumerate((e.strip() for e in text.split(",")), 1):
        if not entry:
            continue
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        where = f"{env_name}, entry {position}"
        if not colon or not NAME.match(name):
            raise ValueError(f"{where}: write name:key (names: letters, digits and _.@- only)")
        if len(key) < MIN_KEY_CHARS or not key.isascii() or not key.isprintable():
            raise ValueError(
                f"{where} ({name}): the key must be at least {MIN_KEY_CHARS} printable ASCII characters "
                "(make one with `hotline apikey new`)"
            )
        if name in keys:
            raise ValueError(f"{where}: {name} is named twice")
        keys[name] = key_hash(key)
    return keys


class ApiKeys:
    """Which API key a request carries: one from the environment, else an active one of the store."""

    def __init__(self, from_env: Mapping[str, str], store: AccessStore) -> None:
        self._fixed = dict(from_env)
        self._store = store

    @property
    def env_names(self) -> list[str]:
        """Names of the keys given in the environment (or with `allow`)."""
        return sorted(self._fixed)

    def allow(self, name: str, key: str) -> None:
        """A key valid in this process only (the in-process service of `hotline replay`)."""
        self._fixed[name] = key_hash(key)

    async def name_of(self, presented: str | None) -> str | None:
        """The name of the key presented, or None (no key, a wrong or a revoked one). The store may raise
        when it cannot be reached (SQLAlchemyError, OSError)."""
        if not presented:
            return None
        digest = key_hash(presented)
        for name, known in self._fixed.items():
            if hmac.compare_digest(known, digest):
                return name
        return await self._store.api_key_name(digest)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request or socket handshake carries: `X-Hotline-Api-Key`, else a Bearer token."""
    key = headers.get("x-hotline-api-key")
    auth = headers.get("authorization", "")
    if key is None and auth.lower().startswith("bearer "):
        key = auth[7:].strip()
    return key
