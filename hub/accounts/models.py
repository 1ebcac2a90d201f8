"""Tables of the accounts domain: account requests (onboarding), password-set tokens, account
history, switch requests and their steps. Migration: ``0005_accounts``."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import ID_MAX, JSONType, UTCDateTime, utcnow


class RequestState(StrEnum):
    """AccountRequest.state."""

    information_requested = "information_requested"
    awaiting_approval = "awaiting_approval"
    awaiting_practice = "awaiting_practice"
    accepted = "accepted"
    rejected = "rejected"


class SwitchState(StrEnum):
    """SwitchRequest.state. ``draft`` and ``discarded`` are operator-only: a draft was read from
    a practice's email and is not a request until an operator confirms it (docs/accounts.md)."""

    draft = "draft"
    pending = "pending"
    awaiting_response = "awaiting_response"
    escalated = "escalated"
    completed = "completed"
    rejected = "rejected"
    discarded = "discarded"


REQUEST_STATES = tuple(s.value for s in RequestState)
SWITCH_STATES = tuple(s.value for s in SwitchState)
#: states only an operator sees: not (yet, or ever) a request the practice or a company is part of
DRAFT_STATES = (SwitchState.draft, SwitchState.discarded)


class AccountRequest(Base):
    """A practice's request for an account with a company, and its onboarding stages."""

    __tablename__ = "account_requests"
    __table_args__ = (
        Index("ix_account_requests_company_id_requested_at", "company_id", "requested_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"))
    practice_name: Mapped[str | None] = mapped_column(String(200))
    contact_name: Mapped[str | None] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    phone: Mapped[str | None] = mapped_column(String(40))
    address: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    pims: Mapped[str | None] = mapped_column(String(100))
    imaging_software: Mapped[str | None] = mapped_column(String(100))
    modalities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    extra: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(32), default=RequestState.information_requested)
    missing_fields: Mapped[list[str]] = mapped_column(JSONType, default=list)
    # sha256 of the secret that lets the practice complete its own request without a login
    completion_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_by: Mapped[str | None] = mapped_column(String(200))
    # stages
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    information_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    account_created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    welcome_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    password_set_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_images_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_case_submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class PasswordSetToken(Base):
    """A single-use, expiring link to set a password; only the SHA-256 of the secret is stored."""

    __tablename__ = "password_set_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AccountHistory(Base):
    """Every change of an account's company, access or modalities, kept after a switch."""

    __tablename__ = "account_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    company_id: Mapped[int] = mapped_column(ForeignKey("companies.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    change: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    switch_request_id: Mapped[int | None] = mapped_column(ForeignKey("switch_requests.id"))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class SwitchRequest(Base):
    """A practice's written request to move its account (or add a company for modalities).

    A draft (read from an email) may not know the account or either company yet: those are
    filled in when an operator confirms it, and every other state has them."""

    __tablename__ = "switch_requests"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), default="move")
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    current_company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    new_company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    modalities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    requester_name: Mapped[str] = mapped_column(String(200))
    requester_email: Mapped[str | None] = mapped_column(String(320))
    requester_authorised: Mapped[bool] = mapped_column(default=False)
    statement: Mapped[str] = mapped_column(Text, default="")
    #: where the written statement is kept when it is not typed in here ("inbound_email:42")
    statement_ref: Mapped[str | None] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(16), default="practice")
    entered_by: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(24), default=SwitchState.pending)
    outcome: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_case_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response: Mapped[str] = mapped_column(String(8), default="none")
    responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_note: Mapped[str | None] = mapped_column(Text)
    operator_decision: Mapped[str] = mapped_column(String(8), default="none")
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    new_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class SwitchStep(Base):
    """One step of a switch request, shown on ``GET /api/switch-requests/{id}``."""

    __tablename__ = "switch_steps"

    id: Mapped[int] = mapped_column(primary_key=True)
    switch_request_id: Mapped[int] = mapped_column(ForeignKey("switch_requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    step: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(200))
    outcome: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


def db_id(value: object) -> int | None:
    """``value`` as a row id (an int, or ASCII digits) when a BIGINT column can hold it, else None:
    int() takes " 7" and "٣", and PostgreSQL refuses 10**23 with an error, not an empty answer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()) or len(value) > 19:
            return None
        value = int(value)
    if isinstance(value, int) and 1 <= value <= ID_MAX:
        return value
    return None
