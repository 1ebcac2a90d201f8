"""Normalising addresses, so a suppression matches however the address was written."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import phonenumbers

POSTAL_KEYS = (
    "name",
    "address_line1",
    "address_line2",
    "address_city",
    "address_state",
    "address_zip",
    "address_country",
)


def normalise_email(address: str) -> str:
    return address.strip().lower()


def _parse_possible(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(number, None if number.strip().startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_possible_number(parsed) else None


def normalise_phone(number: str, region: str | None = "US") -> str | None:
    """E.164, or None when it does not parse as a possible number."""
    parsed = _parse_possible(number, region)
    return None if parsed is None else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mobile_number(number: str | None, region: str | None = "US") -> str | None:
    """E.164 when the number can receive SMS (mobile, or a region where we cannot tell)."""
    if not number:
        return None
    # parsed once: the verdict asks this of every client of a campaign
    parsed = _parse_possible(number, region)
    if parsed is None:
        return None
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    kind = phonenumbers.number_type(parsed)
    if kind in (
        phonenumbers.PhoneNumberType.FIXED_LINE,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.VOIP,
        phonenumbers.PhoneNumberType.PAGER,
    ):
        return None
    return e164


def postal_key(address: Mapping[str, str] | None) -> str:
    """A stable key for a mailing address (suppressions of returned mail)."""
    if not address:
        return ""
    parts = [
        " ".join(str(address.get(k) or "").upper().split())
        for k in ("address_line1", "address_line2", "address_zip", "address_country")
    ]
    return "postal:" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def normalise(kind: str, address: str) -> str:
    if kind == "email":
        return normalise_email(address)
    if kind == "sms":
        return normalise_phone(address) or address.strip()
    return address.strip()
