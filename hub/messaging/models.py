"""Messaging tables: communications and their status history, inbound replies, the consent
ledger and address suppressions.

``client_id`` columns are plain integers, not foreign keys: the PIMS domain owns the clients
table (``hub/pims/models.py``) and its migration ("0003_pims") is on a separate branch from
"0004_messaging", so a foreign key could not be created in a deterministic order. Lookups go
through :mod:`hub.messaging.facts`, which reads the PIMS models when they are installed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import JSONType, UTCDateTime, utcnow


class Communication(Base):
    """One message to one person over one channel, with its verdict, content and status."""

    __tablename__ = "communications"
    __table_args__ = (
        Index("ix_communications_channel_provider_id", "channel", "provider_id"),
        Index("ix_communications_client_id_created_at", "client_id", "created_at"),
        Index("ix_communications_address", "address"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id"), index=True)
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"), index=True)
    #: the PIMS client (pet owner), when the recipient is one (plain integer, see module doc)
    client_id: Mapped[int | None] = mapped_column()
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(String(100))
    #: email address, E.164 phone, or "" for postcards (see postal_address)
    address: Mapped[str] = mapped_column(String(320), default="")
    cc: Mapped[list[str]] = mapped_column(JSONType, default=list)
    postal_address: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    subject: Mapped[str | None] = mapped_column(Text)
    body_text: Mapped[str | None] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    postcard_front_html: Mapped[str | None] = mapped_column(Text)
    postcard_back_html: Mapped[str | None] = mapped_column(Text)
    #: extra headers (List-Unsubscribe...) as sent
    headers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    #: "allow" | "veto" | "defer"
    verdict: Mapped[str] = mapped_column(String(16))
    #: [{"code", "message", "plugin", "channel", "decision"}, ...]
    verdict_reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    status: Mapped[str] = mapped_column(String(32), index=True)
    provider_id: Mapped[str | None] = mapped_column(String(255))
    #: channels still to try, in order, if this one fails permanently
    fallback_channels: Mapped[list[str]] = mapped_column(JSONType, default=list)
    fallback_of_id: Mapped[int | None] = mapped_column(ForeignKey("communications.id"))
    #: the template context, kept so a fallback channel can be rendered later
    context: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CommunicationStatus(Base):
    """Every status a communication was given, in arrival order, applied or not."""

    __tablename__ = "communication_statuses"

    id: Mapped[int] = mapped_column(primary_key=True)
    communication_id: Mapped[int] = mapped_column(ForeignKey("communications.id"), index=True)
    status: Mapped[str] = mapped_column(String(32))
    provider_status: Mapped[str | None] = mapped_column(String(64))
    #: False when the status arrived late or twice and did not move the communication
    applied: Mapped[bool] = mapped_column(Boolean, default=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class InboundMessage(Base):
    """A reply (an SMS, for now) matched to the client by address where possible."""

    __tablename__ = "inbound_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    from_address: Mapped[str] = mapped_column(String(320), index=True)
    to_address: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text, default="")
    provider_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    client_id: Mapped[int | None] = mapped_column(index=True)
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id"), index=True)
    communication_id: Mapped[int | None] = mapped_column(ForeignKey("communications.id"), index=True)
    raw: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsentRecord(Base):
    """The consent ledger: one row per change, never updated.

    A client's preference for (category, channel) is the latest row for it; ``category`` or
    ``channel`` may be ``"*"`` (all). Rows about an address (an SMS STOP, a one-click
    unsubscribe, a bounce) carry the address and, when known, the client.
    """

    __tablename__ = "consent_records"
    __table_args__ = (
        Index("ix_consent_records_client_id_at", "client_id", "at"),
        Index("ix_consent_records_address", "address"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[int | None] = mapped_column()
    practice_id: Mapped[int | None] = mapped_column(ForeignKey("practices.id"))
    address: Mapped[str | None] = mapped_column(String(320))
    category: Mapped[str] = mapped_column(String(32), default="*")
    channel: Mapped[str] = mapped_column(String(16), default="*")
    allowed: Mapped[bool] = mapped_column(Boolean)
    #: pims, staff, preference_page, one_click, sms_keyword, bounce, invalid, api ...
    source: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(200))
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AddressSuppression(Base):
    """The current state of an address: opted out, or invalid (bounced, unreachable).

    One row per (kind, address, reason); ``active`` flips when someone opts back in. The
    history of changes is in :class:`ConsentRecord`.
    """

    __tablename__ = "address_suppressions"
    __table_args__ = (UniqueConstraint("kind", "address", "reason"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: "email" | "sms" | "postal"
    kind: Mapped[str] = mapped_column(String(16))
    #: normalised: lower-case email, E.164 phone, postal address digest
    address: Mapped[str] = mapped_column(String(320))
    #: "opt_out" | "invalid"
    reason: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text, default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
