"""Every inbound email as it arrived (raw, size-capped), and what processing made of it."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import JSONType, UTCDateTime, utcnow


class InboundState(StrEnum):
    """Whether a stored inbound email has been acted on yet."""
    pending = "pending"
    processed = "processed"


class InboundKind(StrEnum):
    """What processing found an inbound email to be, which decides what was done with it."""
    bounce_hard = "bounce_hard"
    bounce_soft = "bounce_soft"
    complaint = "complaint"
    unsubscribe = "unsubscribe"
    reply = "reply"
    unmatched_reply = "unmatched_reply"
    switch_request = "switch_request"
    conversation = "conversation"
    unknown_sender = "unknown_sender"
    unrecognised = "unrecognised"


class InboundEmail(Base):
    """One message delivered to the hub (LMTP or IMAP), stored before it is acknowledged."""

    __tablename__ = "inbound_emails"
    __table_args__ = (Index("ix_inbound_emails_address_kind", "address", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: "lmtp" | "imap"
    via: Mapped[str] = mapped_column(String(16))
    peer: Mapped[str] = mapped_column(String(255), default="")
    #: where a polled copy came from ("imap:<host>/<mailbox>/<uidvalidity>/<uid>"): fetching it
    #: again after a crash, before it was deleted, stores nothing new
    source_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    mail_from: Mapped[str] = mapped_column(String(320), default="")
    rcpt_to: Mapped[list[str]] = mapped_column(JSONType, default=list)
    size: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default=InboundState.pending, index=True)
    kind: Mapped[str | None] = mapped_column(String(32))
    #: passed the spoofing checks (docs/inbound-email.md); unauthenticated mail changes nothing
    authenticated: Mapped[bool | None] = mapped_column(Boolean)
    #: kept for an operator: spoofed, unmatched, from an unknown sender
    flagged: Mapped[bool] = mapped_column(Boolean, default=False)
    #: the bounced/complaining address, for counting soft bounces
    address: Mapped[str | None] = mapped_column(String(320))
    communication_id: Mapped[int | None] = mapped_column()
    outcome: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text, default="")
