"""Imaging tables: studies, instances, cases (their status history, attachments, reports),
per-instance forward results.

The header columns a study and an instance share take their widths from
:mod:`hub.imaging.header_fields`, which the receiver's parser cuts values to.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import JSONType, UTCDateTime, utcnow
from hub.imaging.header_fields import WIDTHS, check_declared

# Study statuses
RECEIVING = "receiving"
STABLE = "stable"



class CaseStatus(StrEnum):
    """A case's status, in the order a case normally moves: submitted, routed, delivered,
    reported. ``failed`` (with its reason) and ``cancelled`` (by the practice, before delivery)
    end a case early."""

    SUBMITTED = "submitted"
    ROUTED = "routed"
    DELIVERED = "delivered"
    REPORTED = "reported"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Urgency(StrEnum):
    """How soon the practice needs the case read; STAT is an emergency."""
    ROUTINE = "routine"
    PRIORITY = "priority"
    STAT = "stat"


class Delivery(StrEnum):
    """How a company receives its cases: C-STORE to its PACS, or in the hub (list, zip,
    DICOMweb)."""

    DICOM = "dicom"
    HUB = "hub"


STANDING_SQL = "('submitted', 'routed', 'delivered', 'reported')"

# The old names, kept for callers outside this package.
CASE_SUBMITTED = CaseStatus.SUBMITTED
CASE_ROUTED = CaseStatus.ROUTED
CASE_DELIVERED = CaseStatus.DELIVERED
CASE_FAILED = CaseStatus.FAILED

# Per-instance forward statuses
FWD_PENDING = "pending"
FWD_SUCCESS = "success"
FWD_WARNING = "warning"
FWD_FAILED = "failed"


def _header_column(name: str) -> Any:
    return mapped_column(String(WIDTHS[name]))


class _HeaderFields:
    """The header fields both a study and an instance keep (from the first/each instance),
    as declared in :mod:`hub.imaging.header_fields` (checked below, at import)."""

    modality: Mapped[str | None] = _header_column("modality")
    animal_name: Mapped[str | None] = _header_column("animal_name")
    animal_id: Mapped[str | None] = _header_column("animal_id")
    species: Mapped[str | None] = _header_column("species")
    responsible_person: Mapped[str | None] = _header_column("responsible_person")
    body_part: Mapped[str | None] = _header_column("body_part")
    study_date: Mapped[str | None] = _header_column("study_date")
    study_description: Mapped[str | None] = _header_column("study_description")
    institution: Mapped[str | None] = _header_column("institution")


check_declared("the Study and Instance rows", _HeaderFields.__annotations__)


class Study(_HeaderFields, Base):
    """All instances one practice sent with one Study Instance UID."""

    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("practice_id", "study_instance_uid"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    modalities: Mapped[list[str]] = mapped_column(JSONType, default=list)
    instance_count: Mapped[int] = mapped_column(default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=RECEIVING)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The deadline the armed stability job checks; None when no check is armed.
    stable_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    stable_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Instance(_HeaderFields, Base):
    """One stored DICOM instance; one row per SOP Instance UID (re-sends make no new row)."""

    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str] = mapped_column(String(16))
    peer_address: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(300))  # relative to the storage root
    received_count: Mapped[int] = mapped_column(default=1)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: the file was deleted by retention (hub/ops/retention.py); the row stays for the history
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Case(Base):
    """A study a practice submitted for review, routed to the company that reads its modality."""

    __tablename__ = "cases"
    __table_args__ = (
        Index("ix_cases_company_id_status", "company_id", "status"),
        # One standing case per study (second opinions aside), even when two submissions race.
        Index("uq_cases_standing_study", "study_id", unique=True,
              sqlite_where=text(f"second_opinion = 0 AND status IN {STANDING_SQL}"),
              postgresql_where=text(f"NOT second_opinion AND status IN {STANDING_SQL}")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id"))
    status: Mapped[str] = mapped_column(String(16), default=CASE_SUBMITTED)
    clinical_history: Mapped[str] = mapped_column(Text, default="")
    question: Mapped[str] = mapped_column(Text, default="")
    submitted_by: Mapped[str] = mapped_column(String(200))
    auto_submitted: Mapped[bool] = mapped_column(default=False)
    route_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    urgency: Mapped[str] = mapped_column(String(16), default=Urgency.ROUTINE)
    delivery: Mapped[str | None] = mapped_column(String(16))
    second_opinion: Mapped[bool] = mapped_column(default=False)
    # The patient as shown to the company: from the DICOM header or the synced PIMS patient.
    patient: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    pims_patient_id: Mapped[int | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the company's turnaround for the case's urgency runs out, and when it was flagged.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseAttachment(Base):
    """A PDF or image the practice attached to its request (size-limited; kept in the row)."""

    __tablename__ = "case_attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    filename: Mapped[str] = mapped_column(String(200))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int]
    content: Mapped[bytes] = mapped_column(LargeBinary)


class CaseReport(Base):
    """The company's report on a case. Never edited: an addendum is a new row linked to the
    report it amends."""

    __tablename__ = "case_reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    addendum_to_id: Mapped[int | None] = mapped_column(ForeignKey("case_reports.id"))
    text: Mapped[str] = mapped_column(Text)
    radiologist: Mapped[str] = mapped_column(String(200))
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary)
    source: Mapped[str] = mapped_column(String(16))  # api, dicom
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    shareable: Mapped[bool] = mapped_column(default=False)
    shared_by: Mapped[str | None] = mapped_column(String(200))
    shared_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseStatusChange(Base):
    """One step of a case's status history."""

    __tablename__ = "case_status_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class CaseInstanceForward(Base):
    """What the company's peer answered for one instance of a forwarded case."""

    __tablename__ = "case_instance_forwards"
    __table_args__ = (UniqueConstraint("case_id", "instance_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id"))
    status: Mapped[str] = mapped_column(String(16), default=FWD_PENDING)
    status_code: Mapped[int | None]
    comment: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
