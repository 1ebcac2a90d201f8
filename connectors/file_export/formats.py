"""The CSV files the file-export connector reads: names, columns and how values are parsed.

One file per kind, named ``<kind>*.csv`` (``clients.csv``, ``clients-2026-11-26.csv``...), with
a header row. Column names below are the defaults; ``columns`` in config maps them to the
headers a PIMS actually writes. Only the id columns are required in the header; a missing
optional column reads as empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from hub.pims.records import (
    AppointmentRecord,
    ClientRecord,
    PatientRecord,
    RecordKind,
    ReminderRecord,
    VisitRecord,
)

# kind -> (file prefix, record class, [(column, record field, parser name)], required columns)
COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "client": [
        ("client_id", "external_id", "text"),
        ("first_name", "first_name", "text"),
        ("last_name", "last_name", "text"),
        ("status", "status", "status"),
        ("client_class", "client_class", "text"),
        ("balance", "balance", "decimal"),
        ("comms_disabled", "comms_disabled", "flag"),
        ("email", "email", "text"),
        ("phone_home", "phone_home", "text"),
        ("phone_work", "phone_work", "text"),
        ("phone_mobile", "phone_mobile", "text"),
        ("address_line1", "address_line1", "text"),
        ("address_line2", "address_line2", "text"),
        ("city", "city", "text"),
        ("region", "region", "text"),
        ("postcode", "postcode", "text"),
        ("country", "country", "text"),
        ("email_status", "email_status", "text"),
        ("pet_app_status", "pet_app_status", "text"),
        ("modified_at", "modified_at", "datetime"),
    ],
    "patient": [
        ("patient_id", "external_id", "text"),
        ("client_id", "client_external_id", "text"),
        ("name", "name", "text"),
        ("species", "species", "text"),
        ("breed", "breed", "text"),
        ("sex", "sex", "text"),
        ("birth_date", "birth_date", "date"),
        ("status", "status", "status"),
        ("modified_at", "modified_at", "datetime"),
    ],
    "reminder": [
        ("reminder_id", "external_id", "text"),
        ("patient_id", "patient_external_id", "text"),
        ("service", "service", "text"),
        ("due_date", "due_date", "date"),
        ("status", "status", "status"),
        ("modified_at", "modified_at", "datetime"),
    ],
    "appointment": [
        ("appointment_id", "external_id", "text"),
        ("patient_id", "patient_external_id", "text"),
        ("client_id", "client_external_id", "text"),
        ("start", "start_at", "datetime"),
        ("type", "type", "text"),
        ("status", "status", "text"),
        ("modified_at", "modified_at", "datetime"),
    ],
    "visit": [
        ("visit_id", "external_id", "text"),
        ("patient_id", "patient_external_id", "text"),
        ("client_id", "client_external_id", "text"),
        ("date", "visited_at", "datetime"),
        ("reason", "reason", "text"),
        ("modified_at", "modified_at", "datetime"),
    ],
}
#: file name prefixes, in the order files are taken: owners before their animals.
FILE_PREFIXES: dict[RecordKind, str] = {"client": "clients", "patient": "patients", "reminder": "reminders",
                 "appointment": "appointments", "visit": "visits"}
RECORD_CLASSES: dict[str, Callable[..., Any]] = {
    "client": ClientRecord, "patient": PatientRecord, "reminder": ReminderRecord,
    "appointment": AppointmentRecord, "visit": VisitRecord,
}
ID_COLUMN = {kind: columns[0][0] for kind, columns in COLUMNS.items()}

_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}
_MONEY = re.compile(r"[\s$£€,]")


class Parsers:
    """Turns cell text into typed values; raises ValueError naming what was expected."""

    def __init__(self, date_format: str, zone: tzinfo) -> None:
        self.date_format = date_format
        self.zone = zone

    def text(self, value: str) -> str | None:
        return value if value.strip() else None

    def status(self, value: str) -> str:
        return value.strip().lower() or "active"

    def flag(self, value: str) -> bool:
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise ValueError(f"expected a yes/no flag, got {value!r}")

    def decimal(self, value: str) -> Decimal | None:
        v = _MONEY.sub("", value)
        if not v:
            return None
        if v.startswith("(") and v.endswith(")"):  # accounting negative
            v = "-" + v[1:-1]
        try:
            return Decimal(v)
        except InvalidOperation:
            raise ValueError(f"expected an amount, got {value!r}") from None

    def date(self, value: str) -> date | None:
        v = value.strip()
        if not v:
            return None
        if self.date_format == "%Y-%m-%d" and len(v) == 10 and v[4] == v[7] == "-":
            # What strptime would read, at a tenth of its cost (it was half of a full sync's
            # CSV parsing); anything else, or an invalid date, takes the path below.
            try:
                return date.fromisoformat(v)
            except ValueError:
                pass
        try:
            return datetime.strptime(v, self.date_format).date()
        except ValueError:
            try:
                return date.fromisoformat(v[:10])
            except ValueError:
                raise ValueError(f"expected a date like {self.date_format}, got {value!r}") from None

    def datetime(self, value: str) -> datetime | None:
        v = value.strip()
        if not v:
            return None
        try:
            moment = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"expected an ISO 8601 date and time, got {value!r}") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return moment.astimezone(UTC)
