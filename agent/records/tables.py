"""The record tables (SQLAlchemy 2 rows): calls, turns, actions, events, CDRs and event deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the record tables."""


UNSTREAMED = ("answered", "dialing")
"""Statuses of calls whose stream has not connected yet: the only ones a stream may claim."""
NEVER_STREAMED = {"answered": "abandoned", "dialing": "unanswered"}
"""What an unstreamed call becomes when it ends without a stream (inbound: abandoned; outbound:
unanswered)."""


class CallRow(Base):
    """One call, inbound or outbound."""

    __tablename__ = "calls"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cmiuuid: Mapped[str | None] = mapped_column(String(128), index=True)
    request_id: Mapped[str | None] = mapped_column(String(128), index=True)
    bot: Mapped[str | None] = mapped_column(String(64), index=True)
    direction: Mapped[str] = mapped_column(String(16), default="inbound")
    from_number: Mapped[str | None] = mapped_column(String(32))
    to_number: Mapped[str | None] = mapped_column(String(32), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[float] = mapped_column(Float, index=True)
    connected_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    recording_path: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TurnRow(Base):
    """Something the caller or the bot said."""

    __tablename__ = "turns"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text, default="")
    heard_text: Mapped[str | None] = mapped_column(Text)
    interrupted: Mapped[bool] = mapped_column(Boolean, default=False)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    latency: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    signals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ActionRow(Base):
    """Something the service did on the call (PCMO sent, transfer, hangup...) and why."""

    __tablename__ = "actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JSON)
    reason: Mapped[Any] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)


class EventRow(Base):
    """A platform event (Event URL) or a stream event of ours; kept even when no call matches yet."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_id: Mapped[str | None] = mapped_column(String(64), index=True)
    cmiuuid: Mapped[str | None] = mapped_column(String(128), index=True)
    source: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JSON)
    at: Mapped[float] = mapped_column(Float)


class CdrRow(Base):
    """A call detail record; PIOPIY retries them, so one row per (cmiuuid, leg)."""

    __tablename__ = "cdrs"
    __table_args__ = (UniqueConstraint("cmiuuid", "leg", name="uq_cdr_leg"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cmiuuid: Mapped[str] = mapped_column(String(128), index=True)
    leg: Mapped[str] = mapped_column(String(8))
    payload: Mapped[Any] = mapped_column(JSON)
    received_at: Mapped[float] = mapped_column(Float)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)


class EventDeliveryRow(Base):
    """A platform event already stored, by what identifies its delivery: a retry is stored once."""

    __tablename__ = "event_deliveries"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    received_at: Mapped[float] = mapped_column(Float, index=True)
