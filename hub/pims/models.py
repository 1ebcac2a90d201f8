"""The hub's copy of each practice's PIMS data, and the bookkeeping of syncing it.

Every synced table is keyed by (practice_id, external_id): the id the PIMS gives the record.
Links between records (a patient's owner, an appointment's patient) are kept as the PIMS's
external ids, so records can arrive in any order and a link to a record the hub has not seen
yet is not an error; join on (practice_id, *_external_id). ``synced_at`` is when the row last
changed here; ``modified_at`` is the PIMS's own modification time. ``content_hash`` is the
digest of the PIMS record the row was last normalised from (see
:func:`hub.pims.normalise.content_hash`): a sync skips a record whose digest is unchanged.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.base import Base
from hub.db.types import JSONType, UTCDateTime, utcnow

#: Search keys compare byte-wise on PostgreSQL (collation "C"), so a prefix is one range of
#: the index whatever the database's default collation; SQLite compares bytes already.
SearchKey = String(200).with_variant(String(200, collation="C"), "postgresql")


class Client(Base):
    """A pet owner, as the practice's PIMS knows them.

    ``name_key`` ("first last") and ``surname_key`` ("last first") are the name folded to
    lower-case ASCII (see :func:`hub.pims.normalise.search_key`), ``email_key`` the email in
    lower case: the indexes behind client search (:mod:`hub.clients.search`).
    """

    __tablename__ = "clients"
    __table_args__ = (
        UniqueConstraint("practice_id", "external_id"),
        Index("ix_clients_practice_name_key", "practice_id", "name_key"),
        Index("ix_clients_practice_surname_key", "practice_id", "surname_key"),
        Index("ix_clients_practice_email_key", "practice_id", "email_key"),
        Index("ix_clients_practice_phone_mobile", "practice_id", "phone_mobile"),
        Index("ix_clients_practice_phone_home", "practice_id", "phone_home"),
        Index("ix_clients_practice_phone_work", "practice_id", "phone_work"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    client_class: Mapped[str | None] = mapped_column(String(100))
    balance: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    #: None: the PIMS cannot supply the flag (the contact verdict treats that conservatively)
    comms_disabled: Mapped[bool | None] = mapped_column(default=False)
    email: Mapped[str | None] = mapped_column(String(320))
    phone_home: Mapped[str | None] = mapped_column(String(20))
    phone_work: Mapped[str | None] = mapped_column(String(20))
    phone_mobile: Mapped[str | None] = mapped_column(String(20))
    address_line1: Mapped[str | None] = mapped_column(String(200))
    address_line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    region: Mapped[str | None] = mapped_column(String(100))
    postcode: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(64))
    #: valid, invalid, bounced, unverified (as the PIMS knows it)
    email_status: Mapped[str] = mapped_column(String(16), default="unverified")
    #: active, unregistered: the client's pet-app (digital health record) registration
    pet_app_status: Mapped[str] = mapped_column(String(16), default="unregistered")
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(32))
    name_key: Mapped[str | None] = mapped_column(SearchKey)
    surname_key: Mapped[str | None] = mapped_column(SearchKey)
    email_key: Mapped[str | None] = mapped_column(String(320))


class Patient(Base):
    """A client's animal."""

    __tablename__ = "patients"
    __table_args__ = (
        UniqueConstraint("practice_id", "external_id"),
        Index("ix_patients_practice_client", "practice_id", "client_external_id"),
        Index("ix_patients_practice_name_key", "practice_id", "name_key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    client_external_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    species: Mapped[str | None] = mapped_column(String(100))
    breed: Mapped[str | None] = mapped_column(String(100))
    sex: Mapped[str | None] = mapped_column(String(50))
    birth_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(32))
    name_key: Mapped[str | None] = mapped_column(SearchKey)


class Reminder(Base):
    """A service due for a patient."""

    __tablename__ = "reminders"
    __table_args__ = (
        UniqueConstraint("practice_id", "external_id"),
        Index("ix_reminders_practice_patient", "practice_id", "patient_external_id"),
        Index("ix_reminders_practice_due", "practice_id", "due_date"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    patient_external_id: Mapped[str | None] = mapped_column(String(64))
    service: Mapped[str | None] = mapped_column(String(200))
    due_date: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16), default="active")
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(32))


class Appointment(Base):
    """A booked appointment, as the practice's PIMS lists it."""
    __tablename__ = "appointments"
    __table_args__ = (
        UniqueConstraint("practice_id", "external_id"),
        Index("ix_appointments_practice_start", "practice_id", "start_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    patient_external_id: Mapped[str | None] = mapped_column(String(64))
    client_external_id: Mapped[str | None] = mapped_column(String(64))
    start_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    type: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[str | None] = mapped_column(String(32))
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(32))


class Visit(Base):
    """A consult that happened, as the practice's PIMS records it."""
    __tablename__ = "visits"
    __table_args__ = (
        UniqueConstraint("practice_id", "external_id"),
        Index("ix_visits_practice_client", "practice_id", "client_external_id"),
        Index("ix_visits_practice_visited_at", "practice_id", "visited_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    patient_external_id: Mapped[str | None] = mapped_column(String(64))
    client_external_id: Mapped[str | None] = mapped_column(String(64))
    visited_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(Text)
    modified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    synced_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    content_hash: Mapped[str | None] = mapped_column(String(32))


class RunStatus(StrEnum):
    """How a sync run ended, or that it is still going; the two unusual states are noted below."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: the process died mid-run (marked so by the next run)
    INTERRUPTED = "interrupted"
    #: a scheduled tick found the previous run still going (never stored)
    SKIPPED = "skipped"


class RunTrigger(StrEnum):
    """What started a sync run: its schedule, the command line or the API."""
    SCHEDULE = "schedule"
    CLI = "cli"
    API = "api"


class SyncCheckpoint(Base):
    """Where a practice's connector has got to; advanced in the transaction of each batch."""

    __tablename__ = "pims_checkpoints"
    __table_args__ = (UniqueConstraint("practice_id", "connector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    #: the connector entry's name within the practice (``name``, or the connector's own).
    connector: Mapped[str] = mapped_column(String(100))
    checkpoint: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SyncRun(Base):
    """One full or incremental run; its counts grow batch by batch, in the batches' commits."""

    __tablename__ = "pims_sync_runs"
    __table_args__ = (Index("ix_pims_sync_runs_practice_connector", "practice_id", "connector"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"))
    connector: Mapped[str] = mapped_column(String(100))
    full: Mapped[bool] = mapped_column(default=False)
    trigger: Mapped[str] = mapped_column(String(16))  # a RunTrigger
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)  # a RunStatus
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: written with every batch: a "running" run whose heartbeat is old died with its process.
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    batches: Mapped[int] = mapped_column(default=0)
    #: {kind: {"inserted", "updated", "unchanged", "rejected"}}
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    rejected: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)


class SyncReject(Base):
    """A record that could not be synced: what the PIMS sent and why it was refused."""

    __tablename__ = "pims_rejects"

    id: Mapped[int] = mapped_column(primary_key=True)
    practice_id: Mapped[int] = mapped_column(ForeignKey("practices.id"), index=True)
    connector: Mapped[str] = mapped_column(String(100))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pims_sync_runs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(300))
    raw: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
