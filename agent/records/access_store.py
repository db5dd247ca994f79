"""Credentials kept in the service's store: API keys (hashed) and dashboard sessions, shared by workers.

Only hashes are stored: a copy of the database opens neither the API nor a dashboard session. Every
worker reads the same rows, so a key revoked or a session logged out on one is refused on all of them.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, String, delete, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agent.records.store import Store


class AccessBase(DeclarativeBase):
    """Declarative base of the credential tables (apart from the call records' own)."""


class ApiKeyRow(AccessBase):
    """A named API key: its SHA-256, when it was made and, once revoked, when."""

    __tablename__ = "api_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class DashboardSessionRow(AccessBase):
    """A dashboard login: the SHA-256 of its session id, its user, and when it stops being valid."""

    __tablename__ = "dashboard_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class NameTaken(ValueError):
    """An API key of this name exists and is not revoked."""


class AccessStore:
    """API keys and dashboard sessions in the store's database (its engine, its own tables)."""

    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def init(self) -> None:
        """Create the tables when they do not exist."""
        async with self.engine.begin() as conn:
            await conn.run_sync(AccessBase.metadata.create_all)

    # ------------------------------------------------------------------------------ API keys

    async def add_api_key(self, name: str, key_hash: str, now: float) -> None:
        """Keep a new key under `name`; a revoked key of that name is replaced. NameTaken if one is active."""
        async with self._session.begin() as s:
            row = await s.get(ApiKeyRow, name, with_for_update=True)
            if row is not None and row.revoked_at is None:
                raise NameTaken(name)
            if row is not None:
                await s.delete(row)
                await s.flush()
            s.add(ApiKeyRow(name=name, key_hash=key_hash, created_at=now, revoked_at=None))

    async def api_keys(self) -> list[dict[str, Any]]:
        """Every key by name: name, created_at, revoked_at (None while it opens the API)."""
        async with self._session() as s:
            rows = (await s.scalars(select(ApiKeyRow).order_by(ApiKeyRow.name))).all()
        return [{"name": r.name, "created_at": r.created_at, "revoked_at": r.revoked_at} for r in rows]

    async def revoke_api_key(self, name: str, now: float) -> bool:
        """Refuse the key from now on; False when no active key has this name."""
        async with self._session.begin() as s:
            result = await s.execute(
                update(ApiKeyRow)
                .where(ApiKeyRow.name == name, ApiKeyRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(getattr(result, "rowcount", 0))

    async def api_key_name(self, key_hash: str) -> str | None:
        """The name of the active key with this hash, or None."""
        query = select(ApiKeyRow.name).where(ApiKeyRow.key_hash == key_hash, ApiKeyRow.revoked_at.is_(None))
        async with self._session() as s:
            return await s.scalar(query)

    # ------------------------------------------------------------------------------ dashboard sessions

    async def open_session(self, id_hash: str, user: str, now: float, ttl_s: float) -> None:
        """Record a login; sessions that expired a day ago are forgotten on the way."""
        async with self._session.begin() as s:
            await s.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at < now - 86400))
            s.add(DashboardSessionRow(id_hash=id_hash, user=user, created_at=now, expires_at=now + ttl_s))

    async def session_user(self, id_hash: str, now: float, max_age_s: float) -> str | None:
        """The user of a session that is still open: not logged out, not past its expiry, and younger
        than `max_age_s` (the current session_ttl_s, which may have been lowered since the login)."""
        query = select(DashboardSessionRow.user).where(
            DashboardSessionRow.id_hash == id_hash,
            DashboardSessionRow.expires_at > now,
            DashboardSessionRow.created_at > now - max_age_s,
        )
        async with self._session() as s:
            return await s.scalar(query)

    async def close_session(self, id_hash: str) -> None:
        """Log a session out: its cookie is refused from now on, on every worker."""
        async with self._session.begin() as s:
            await s.execute(delete(DashboardSessionRow).where(DashboardSessionRow.id_hash == id_hash))
