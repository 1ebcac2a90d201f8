"""Validate and normalise PIMS records before they are stored.

Each function returns the (same, updated) record, or a ``str``: the reason it is rejected.
Emails are checked for syntax with email-validator (no DNS), phones become E.164 with the
practice's country as the default region, text is trimmed and inner runs of whitespace
collapsed. Empty strings become None.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import unicodedata
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from functools import lru_cache
from operator import attrgetter
from typing import Any

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from hub.pims.records import (
    AnyRecord,
    AppointmentRecord,
    ClientRecord,
    ClientStatus,
    EmailStatus,
    PatientRecord,
    PatientStatus,
    PetAppStatus,
    ReminderRecord,
    VisitRecord,
)

#: Part of every record's content hash: raise it whenever a change here would store a
#: different row for the same PIMS record, so the next sync normalises every record again
#: instead of skipping the ones whose PIMS content is unchanged.
NORMALISER_VERSION = 1


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(e.value for e in enum)


CLIENT_STATUSES = _values(ClientStatus)
PATIENT_STATUSES = _values(PatientStatus)
EMAIL_STATUSES = _values(EmailStatus)
PET_APP_STATUSES = _values(PetAppStatus)
#: fields the engine computes; what the connector gave is everything else but ``raw``.
_DERIVED = frozenset({"name_key", "surname_key", "email_key", "raw"})
_CONTENT: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    cls: attrgetter(*[f.name for f in dataclasses.fields(cls) if f.name not in _DERIVED])
    for cls in (ClientRecord, PatientRecord, ReminderRecord, AppointmentRecord, VisitRecord)
}


#: types a record's values have, none of them an Enum
_PLAIN_TYPES = frozenset({str, type(None), bool, int, float, Decimal, date, datetime})


def content_hash(record: AnyRecord, country: str) -> str:
    """A digest of ``record`` as the connector gave it (before normalisation), of the
    practice's country and of :data:`NORMALISER_VERSION`: when all three are what they were
    at the last sync, normalising the record again would store the same row."""
    values = _CONTENT[type(record)](record)
    # an enum member's repr is not its value's: a connector that gives ClientStatus.ACTIVE one
    # day and "active" the next has not changed the record. Checking the values' few types
    # costs a tenth of checking each value.
    if not _PLAIN_TYPES.issuperset(map(type, values)):
        values = tuple(v.value if isinstance(v, Enum) else v for v in values)
    content = repr((NORMALISER_VERSION, country, values))
    return hashlib.blake2b(content.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

_PHONE_FIELDS = ("phone_home", "phone_work", "phone_mobile")
_TEXT_FIELDS = {
    ClientRecord: (
        "first_name", "last_name", "client_class", "address_line1", "address_line2",
        "city", "region", "postcode",
    ),
    PatientRecord: ("client_external_id", "name", "species", "breed", "sex"),
    ReminderRecord: ("patient_external_id", "service"),
    AppointmentRecord: ("patient_external_id", "client_external_id", "type", "status"),
    VisitRecord: ("patient_external_id", "client_external_id", "reason"),
}


def clean_text(value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value or None


# Fast paths for the shapes nearly every PIMS record has. Each accepts only a subset of what
# the library accepts and gives the library's result (tests/hub/pims/test_normalise.py checks
# them against it); anything else takes the library's full path. Parsing dominates a full
# sync's cost otherwise (phonenumbers.parse alone ~100 µs a number).
_PLAIN_EMAIL = re.compile(
    r"^[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}))$"
)
_NANP = re.compile(r"^(?:\+?1[ .-]?)?\(?([2-9]\d{2})\)?[ .-]?([2-9]\d{2})[ .-]?(\d{4})$")


@lru_cache(maxsize=65536)
def normalise_email(value: str) -> str:
    """Return the normalised address or raise ValueError with the reason."""
    plain = _PLAIN_EMAIL.match(value)
    if (plain and len(value) <= 254 and value.index("@") <= 64 and "--" not in plain.group(1)
            and plain.group(2).lower() not in SPECIAL_USE_DOMAIN_NAMES):
        local, domain = value.split("@")
        return f"{local}@{domain.lower()}"
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as err:
        raise ValueError(f"invalid email {value!r}: {err}") from err


@lru_cache(maxsize=65536)
def normalise_phone(value: str, region: str) -> str:
    """Return the number in E.164 or raise ValueError with the reason."""
    nanp = _NANP.match(value) if _country_code(region) == 1 else None
    if nanp:
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int("".join(nanp.groups())))
    else:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException as err:
            raise ValueError(f"unparseable phone {value!r}: {err}") from err
    # The practice's own region first: it is the common case and much cheaper than asking
    # every region that shares the country code.
    if not (phonenumbers.is_valid_number_for_region(number, region)
            or phonenumbers.is_valid_number(number)):
        raise ValueError(f"invalid phone {value!r} for region {region}")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@lru_cache(maxsize=256)
def _country_code(region: str) -> int:
    return phonenumbers.country_code_for_region(region)


_NOT_KEY = re.compile(r"[^a-z0-9 ]+")


@lru_cache(maxsize=65536)
def search_key(text: str) -> str:
    """``text`` folded for prefix search: accents dropped, lower case, ASCII letters and digits,
    words separated by one space ("Siobhán O'Brien" -> "siobhan obrien")."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    folded = folded.replace("'", "").replace("’", "")
    return " ".join(_NOT_KEY.sub(" ", folded).split())


def client_keys(first: str | None, last: str | None, email: str | None) -> tuple[str | None, ...]:
    """(name_key, surname_key, email_key) of a client."""
    f, la = search_key(first or ""), search_key(last or "")
    name = " ".join(p for p in (f, la) if p)[:200] or None
    surname = " ".join(p for p in (la, f) if p)[:200] or None
    return name, surname, (email.lower() if email else None)


def normalise(record: AnyRecord, country: str) -> AnyRecord | str:
    """Normalise ``record`` in place for a practice in ``country`` (ISO alpha-2).

    Returns the record, or the reason it must be rejected.
    """
    external_id = clean_text(record.external_id)
    if not external_id:
        return "missing external id"
    record.external_id = external_id
    for name in _TEXT_FIELDS[type(record)]:
        value = getattr(record, name)
        if value is not None:  # most optional fields are empty: skip the call
            setattr(record, name, clean_text(value))
    if isinstance(record, ClientRecord):
        return _client(record, country)
    if isinstance(record, PatientRecord):
        record.status = (clean_text(record.status) or "active").lower()
        if record.status not in PATIENT_STATUSES:
            return f"unknown patient status {record.status!r} (expected one of {PATIENT_STATUSES})"
        if not record.client_external_id:
            return "patient has no client id"
        record.name_key = search_key(record.name or "")[:200] or None
        return record
    if isinstance(record, ReminderRecord):
        if not record.patient_external_id:
            return "reminder has no patient id"
        if record.due_date is None:
            return "reminder has no due date"
        return record
    if isinstance(record, AppointmentRecord):
        if record.start_at is None:
            return "appointment has no start time"
        return record
    if isinstance(record, VisitRecord):
        if record.visited_at is None:
            return "visit has no date"
        return record
    raise TypeError(f"not a PIMS record: {type(record).__name__}")


def _client(record: ClientRecord, country: str) -> ClientRecord | str:
    record.status = (clean_text(record.status) or "active").lower()
    if record.status not in CLIENT_STATUSES:
        return f"unknown client status {record.status!r} (expected one of {CLIENT_STATUSES})"
    email = clean_text(record.email)
    try:
        record.email = normalise_email(email) if email else None
        region = country.upper()
        for name in _PHONE_FIELDS:
            phone = clean_text(getattr(record, name))
            setattr(record, name, normalise_phone(phone, region) if phone else None)
    except ValueError as err:
        return str(err)
    record.country = clean_text(record.country)
    record.email_status = (clean_text(record.email_status) or "unverified").lower()
    if record.email_status not in EMAIL_STATUSES:
        return f"unknown email status {record.email_status!r} (expected one of {EMAIL_STATUSES})"
    record.pet_app_status = (clean_text(record.pet_app_status) or "unregistered").lower()
    if record.pet_app_status not in PET_APP_STATUSES:
        return (f"unknown pet app status {record.pet_app_status!r} "
                f"(expected one of {PET_APP_STATUSES})")
    record.name_key, record.surname_key, record.email_key = client_keys(
        record.first_name, record.last_name, record.email)
    return record
