"""Tables of the clients domain: alert settings, reminder steps, surveys, the loyalty ledger.

``client_id`` and ``reminder_id`` are plain integers, as in the messaging domain: the PIMS
tables are on another migration branch. Every row carries its ``practice_id`` for scoping.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import JSONType, UTCDateTime, utcnow


class StepStatus(StrEnum):
    """What became of one reminder step."""

    queued = "queued"  # a communication was queued (the contact verdict allowed it)
    deferred = "deferred"  # queued, held by the verdict until quiet hours end
    suppressed = "suppressed"  # the contact verdict vetoed every channel; reasons stored
    skipped = "skipped"  # the hub decided not to ask (deceased patient...); reason stored


class SurveyStatus(StrEnum):
    """SurveyRequest.status: skipped until its message is queued, then the message's, then answered."""

    skipped = "skipped"  # written first; stays when no message was queued for the visit
    queued = "queued"
    deferred = "deferred"
    suppressed = "suppressed"
    answered = "answered"


class AlertSettings(Base):
    """Which retention alerts staff turned off for one client (never reminders)."""

    __tablename__ = "client_alert_settings"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(unique=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    all_disabled: Mapped[bool] = mapped_column(default=False)
    #: alert codes turned off one by one
    disabled: Mapped[list[str]] = mapped_column(JSONType, default=list)
    updated_by: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReminderStep(Base):
    """One step of one reminder, written once: the unique key is what makes it exactly once."""

    __tablename__ = "reminder_steps"
    __table_args__ = (
        UniqueConstraint("reminder_id", "step"),
        Index("ix_reminder_steps_practice_on", "practice_id", "on_date"),
        Index("ix_reminder_steps_client", "client_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    reminder_id: Mapped[int] = mapped_column()
    client_id: Mapped[int | None] = mapped_column()
    #: the schedule's step name ("before_28", "before_7", "after_14")
    step: Mapped[str] = mapped_column(String(32))
    #: the practice-local day the step was planned for
    on_date: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    communication_id: Mapped[int | None] = mapped_column()
    channel: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SurveyRequest(Base):
    """A survey sent after a visit, and its one answer."""

    __tablename__ = "survey_requests"
    __table_args__ = (
        UniqueConstraint("practice_id", "visit_external_id"),
        Index("ix_survey_requests_client_answered", "client_id", "answered_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    client_id: Mapped[int] = mapped_column()
    visit_external_id: Mapped[str] = mapped_column(String(64))
    visited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    communication_id: Mapped[int | None] = mapped_column()
    status: Mapped[str] = mapped_column(String(16))  # a SurveyStatus
    rating: Mapped[int | None] = mapped_column()
    comment: Mapped[str | None] = mapped_column(Text)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoyaltyAccount(Base):
    """A client's enrolment. ``balance`` is the ledger's sum, moved in the same transaction as
    each ledger row by a conditional UPDATE that refuses to take it below zero
    (:mod:`hub.clients.loyalty`)."""

    __tablename__ = "loyalty_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int] = mapped_column(unique=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    balance: Mapped[int] = mapped_column(default=0)
    enrolled_by: Mapped[str | None] = mapped_column(String(200))
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LoyaltyEntry(Base):
    """The append-only loyalty ledger: never updated, never deleted."""

    __tablename__ = "loyalty_entries"
    __table_args__ = (Index("ix_loyalty_entries_client_at", "client_id", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("loyalty_accounts.id"), index=True)
    client_id: Mapped[int] = mapped_column()
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    #: enroll, adjust, redeem
    kind: Mapped[str] = mapped_column(String(16))
    coins: Mapped[int] = mapped_column()
    reason: Mapped[str] = mapped_column(Text, default="")
    reward: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
