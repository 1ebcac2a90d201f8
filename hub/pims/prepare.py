"""The sync engine's work on a batch that needs no database — grouping the records by external
id, their content hashes, and normalised rows — which a connector may have done ahead, where
it reads.

A batch is applied in one transaction (:mod:`hub.pims.sync`), and while the database does its
part (SQLite's C code in its thread, or the PostgreSQL server) this process's Python only
waits, but for a connector that reads the next batch meanwhile (the file-export connector
reads one ahead in a thread). :func:`prepare_ahead` puts more of the engine's own work there:
called on a batch the connector is about to yield, in its reading thread, it hashes the
records and, for the kinds of which the practice had no row when the run began, normalises
them. In its transaction the engine then only compares the hashes with the stored ones: a
record whose hash is unchanged is skipped exactly as before (what was computed ahead for it,
a reject included, is dropped); every other record takes the outcome computed ahead, which is
what normalising it in the transaction would have given.

``prepare_ahead`` finds the run through a context variable the engine sets (tasks and
``asyncio.to_thread`` carry it into the connector's reading), so a connector needs no
plumbing; outside a sync run it does nothing, and a batch not prepared ahead is prepared by
the engine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sqlalchemy import Table

from hub.db.base import table_of
from hub.pims.models import Appointment, Client, Patient, Reminder, Visit
from hub.pims.normalise import clean_text, content_hash, normalise
from hub.pims.records import (
    AppointmentRecord,
    Batch,
    ClientRecord,
    PatientRecord,
    RecordKind,
    ReminderRecord,
    VisitRecord,
)

#: kind -> (batch attribute, table, record class), in upsert order.
KINDS: dict[RecordKind, tuple[str, Table, type]] = {
    "client": ("clients", table_of(Client), ClientRecord),
    "patient": ("patients", table_of(Patient), PatientRecord),
    "reminder": ("reminders", table_of(Reminder), ReminderRecord),
    "appointment": ("appointments", table_of(Appointment), AppointmentRecord),
    "visit": ("visits", table_of(Visit), VisitRecord),
}
_FIELDS = {kind: [f.name for f in dataclasses.fields(cls) if f.name != "raw"]
           for kind, (_a, _t, cls) in KINDS.items()}
#: kind -> record -> the values of _FIELDS[kind], in one C call rather than a getattr each.
_VALUES: dict[RecordKind, Callable[[Any], tuple[Any, ...]]] = {
    kind: attrgetter(*names) for kind, names in _FIELDS.items()}
#: kind -> the columns of a row as the engine builds it: the record's fields, then its hash
#: (practice_id and synced_at are the batch's: :mod:`hub.pims.bulk`).
_COLUMNS = {kind: (*names, "content_hash") for kind, names in _FIELDS.items()}


def _text_limits(kind: RecordKind, table: Table) -> list[tuple[int, str, int]]:
    out = []
    for index, name in enumerate(_COLUMNS[kind]):
        length = getattr(table.c[name].type, "length", None)
        if length:
            out.append((index, name, length))
    return out


#: kind -> [(index in a row, field, maximum length)] of the text columns: a longer value would
#: fail the whole batch on PostgreSQL (and stop every later run at the same batch), so it is
#: one reject.
_LIMITS = {kind: _text_limits(kind, table) for kind, (_a, table, _c) in KINDS.items()}

#: a row to upsert (a tuple of ``_COLUMNS[kind]``), or why the record is rejected
Outcome = tuple[Any, ...] | str


def outcome(kind: RecordKind, record: Any, digest: str | None, country: str) -> Outcome:
    """``record`` normalised (in place) and validated: its row, or the reason it is rejected."""
    normalised = normalise(record, country)
    if isinstance(normalised, str):
        return normalised
    row = (*_VALUES[kind](normalised), digest)
    for index, name, limit in _LIMITS[kind]:
        value = row[index]
        if value is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
    return row


@dataclass(slots=True)
class Group:
    """One kind's records of a batch: those with an external id (the last version of each),
    their content hashes and, when normalised ahead, their outcomes; and those without one
    (normalising them gives their reject). Parallel lists rather than a tuple per record:
    fewer objects for the garbage collector to promote and scan."""

    kind: RecordKind
    records: list[Any]
    digests: list[str]
    outcomes: list[Outcome] | None
    unkeyed: list[Any]


@dataclass(frozen=True, slots=True, eq=False)
class Preparation:
    """How one run prepares its batches."""

    country: str
    #: kinds normalised ahead: the practice had no row of them when the run began, so every
    #: record is expected to be new and normalising it is not work a hash would have saved.
    ahead: frozenset[RecordKind]

    def prepare(self, batch: Batch) -> Prepared:
        groups = []
        for kind, (attr, _t, _c) in KINDS.items():
            records = getattr(batch, attr)
            if not records:
                continue
            # The last of several versions of one record in a batch wins, before normalising
            # (one statement may not touch a row twice).
            latest: dict[str, Any] = {}
            unkeyed = []
            for record in records:
                external_id = clean_text(record.external_id)
                if external_id:
                    record.external_id = external_id
                    latest[external_id] = record
                else:
                    unkeyed.append(record)
            keyed = list(latest.values())
            country = self.country
            if kind in self.ahead:
                digests, outcomes = [], []
                for record in keyed:
                    digest = content_hash(record, country)  # of the record as given: first
                    digests.append(digest)
                    outcomes.append(outcome(kind, record, digest, country))
                groups.append(Group(kind, keyed, digests, outcomes, unkeyed))
            else:
                digests = [content_hash(record, country) for record in keyed]
                groups.append(Group(kind, keyed, digests, None, unkeyed))
        return Prepared(self, groups)


@dataclass(slots=True)
class Prepared:
    """A batch as :meth:`Preparation.prepare` left it; the engine takes it only from its own
    run's preparation."""

    preparation: Preparation
    groups: list[Group]


RUN: ContextVar[Preparation | None] = ContextVar("vethub_pims_preparation", default=None)


def prepare_ahead(batch: Batch) -> None:
    """Do the sync engine's database-free work on ``batch`` now, before it is yielded.

    For connectors: call it where the batch is read (in a reading thread, while the engine
    applies the previous batch); the records must not change afterwards. Outside a sync run,
    or called twice, it does nothing.
    """
    preparation = RUN.get()
    if preparation is not None and batch.prepared is None:
        batch.prepared = preparation.prepare(batch)
