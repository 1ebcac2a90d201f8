"""Typed change records a PIMS connector yields, grouped in batches.

A connector turns whatever its PIMS speaks into these plain records. The sync engine
(:mod:`hub.pims.sync`) validates and normalises them, upserts them by (practice, external id)
and stores ``Batch.checkpoint`` in the same transaction, so a crash resumes at the last
committed batch.

Records are slotted dataclasses rather than pydantic models: a full sync moves hundreds of
thousands of them and validation happens once, in the engine (``hub.pims.normalise``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

#: An opaque, JSON-serialisable position in the PIMS's change stream, chosen by the connector.
Checkpoint = dict[str, Any]

RecordKind = Literal["client", "patient", "reminder", "appointment", "visit"]



class ClientStatus(StrEnum):
    """The client statuses the sync engine accepts; a connector maps its PIMS's wording to these."""
    ACTIVE = "active"
    INACTIVE = "inactive"


class PatientStatus(StrEnum):
    """The patient statuses the sync engine accepts; a connector maps its PIMS's wording to these."""
    ACTIVE = "active"
    INACTIVE = "inactive"
    DECEASED = "deceased"


class ReminderStatus(StrEnum):
    """Reminder.status as connectors write it; only ``active`` (still due) is read, nothing is checked."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class EmailStatus(StrEnum):
    """What the PIMS knows of a client's email address (the hub's own bounces are kept apart)."""

    VALID = "valid"
    INVALID = "invalid"
    BOUNCED = "bounced"
    UNVERIFIED = "unverified"


class PetAppStatus(StrEnum):
    """The client's registration with the PIMS's pet app (digital health record)."""

    ACTIVE = "active"
    UNREGISTERED = "unregistered"


@dataclass(slots=True)
class ClientRecord:
    """A pet owner as the PIMS knows them."""

    external_id: str
    first_name: str | None = None
    last_name: str | None = None
    status: str = "active"
    client_class: str | None = None
    balance: Decimal | None = None
    #: the PIMS's "no communications" flag; None when this PIMS cannot say (unknown)
    comms_disabled: bool | None = False
    email: str | None = None
    phone_home: str | None = None
    phone_work: str | None = None
    phone_mobile: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    region: str | None = None
    postcode: str | None = None
    country: str | None = None
    email_status: str = "unverified"
    pet_app_status: str = "unregistered"
    modified_at: datetime | None = None
    #: search keys, computed by the engine (:func:`hub.pims.normalise.search_key`); a
    #: connector leaves them None.
    name_key: str | None = None
    surname_key: str | None = None
    email_key: str | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class PatientRecord:
    """A client's animal. ``client_external_id`` names its owner in the same PIMS."""

    external_id: str
    client_external_id: str | None = None
    name: str | None = None
    species: str | None = None
    breed: str | None = None
    sex: str | None = None
    birth_date: date | None = None
    status: str = "active"
    modified_at: datetime | None = None
    #: the name's search key, computed by the engine; a connector leaves it None.
    name_key: str | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class ReminderRecord:
    """A service due for a patient (vaccination, check-up...)."""

    external_id: str
    patient_external_id: str | None = None
    service: str | None = None
    due_date: date | None = None
    status: str = "active"
    modified_at: datetime | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class AppointmentRecord:
    """A booked appointment as the PIMS knows it."""
    external_id: str
    patient_external_id: str | None = None
    client_external_id: str | None = None
    start_at: datetime | None = None
    type: str | None = None
    status: str | None = None
    modified_at: datetime | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class VisitRecord:
    """A consult that happened (the PIMS's visit or consult)."""

    external_id: str
    patient_external_id: str | None = None
    client_external_id: str | None = None
    visited_at: datetime | None = None
    reason: str | None = None
    modified_at: datetime | None = None
    raw: dict[str, Any] | None = field(default=None, repr=False, compare=False)


AnyRecord = ClientRecord | PatientRecord | ReminderRecord | AppointmentRecord | VisitRecord


@dataclass(slots=True)
class Reject:
    """A record that could not be taken, with why and what the PIMS sent."""

    kind: RecordKind
    reason: str
    raw: dict[str, Any] | None = None
    external_id: str | None = None
    #: where it came from, for reports: a file name and line, a URL...
    source: str | None = None


@dataclass(slots=True)
class Batch:
    """One unit of work: records to upsert and the checkpoint that holds once they commit.

    ``rejects`` starts with what the connector itself could not read; the engine appends the
    records it rejects while normalising before it commits, so a connector that resumes after
    its ``yield`` sees every reject of the batch (the file-export connector reports them).
    """

    checkpoint: Checkpoint
    clients: list[ClientRecord] = field(default_factory=list)
    patients: list[PatientRecord] = field(default_factory=list)
    reminders: list[ReminderRecord] = field(default_factory=list)
    appointments: list[AppointmentRecord] = field(default_factory=list)
    visits: list[VisitRecord] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    #: the connector's estimate of how far the run has got once this batch is in (0..1), for
    #: progress bars; None when it cannot tell.
    progress: float | None = None
    #: the engine's own work on the batch, when done ahead by
    #: :func:`hub.pims.prepare.prepare_ahead`; a connector never sets it itself.
    prepared: Any = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return (
            len(self.clients)
            + len(self.patients)
            + len(self.reminders)
            + len(self.appointments)
            + len(self.visits)
            + len(self.rejects)
        )
