"""Normalisation of PIMS records: table-driven, input -> stored value or reason."""

from __future__ import annotations

import pytest

from hub.pims.normalise import normalise
from hub.pims.records import ClientRecord, PatientRecord, ReminderRecord


@pytest.mark.parametrize(("fields", "country", "expected"), [
    ({"email": " Ann.Lee@Example.COM "}, "US", {"email": "Ann.Lee@example.com"}),
    ({"email": ""}, "US", {"email": None}),
    ({"email": "ann@"}, "US", "invalid email 'ann@'"),
    ({"phone_mobile": "(415) 555-0123"}, "US", {"phone_mobile": "+14155550123"}),
    ({"phone_home": "020 7946 0018"}, "GB", {"phone_home": "+442079460018"}),
    ({"phone_work": "+44 20 7946 0018"}, "US", {"phone_work": "+442079460018"}),
    ({"phone_mobile": "12"}, "US", "invalid phone '12' for region US"),
    ({"phone_mobile": "call me"}, "US", "unparseable phone 'call me'"),
    ({"address_line1": "  12   Oak  St "}, "US", {"address_line1": "12 Oak St"}),
    ({"city": "   "}, "US", {"city": None}),
    ({"status": " Inactive"}, "US", {"status": "inactive"}),
    ({"status": "gone"}, "US", "unknown client status 'gone'"),
    ({"external_id": "  "}, "US", "missing external id"),
])
def test_client(fields: dict, country: str, expected: dict | str) -> None:
    record = ClientRecord(**{"external_id": "C1", **fields})
    result = normalise(record, country)
    if isinstance(expected, str):
        assert isinstance(result, str) and result.startswith(expected)
    else:
        assert isinstance(result, ClientRecord)
        for name, value in expected.items():
            assert getattr(result, name) == value


@pytest.mark.parametrize(("record", "expected"), [
    (PatientRecord("P1", client_external_id="C1", status="Deceased"), "deceased"),
    (PatientRecord("P1", client_external_id=None), "patient has no client id"),
    (PatientRecord("P1", client_external_id="C1", status="lost"), "unknown patient status 'lost'"),
    (ReminderRecord("R1", patient_external_id="P1"), "reminder has no due date"),
])
def test_other_kinds(record, expected: str) -> None:
    result = normalise(record, "US")
    if isinstance(result, str):
        assert result.startswith(expected)
    else:
        assert result.status == expected


EMAILS = [
    "ann@example.com", "Ann.Lee@Example.COM", "a.b-c_d+tag@sub.example.co.uk", "x@a.io",
    "a..b@example.com", ".a@example.com", "a.@example.com", "a@-example.com", "a@example-.com",
    "a@example", "a@example.123", "a@localhost", "a@mail.test", "a@x.local", "a@home.arpa",
    "a@xn--bcher-kva.example", "a@ab--cd.example", "a@" + "l" * 64 + ".com", "a" * 65 + "@x.com",
    "user@" + ".".join(["abcdefghij"] * 25) + ".com", "a@b.c", "UPPER@EXAMPLE.ORG", "a@e.museum",
]
PHONES = [
    "(415) 555-0123", "415-555-0123", "415.555.0123", "4155550123", "+1 415 555 0123",
    "1-415-555-0123", "+14155550123", "(212)555-0199", "(123) 456-7890", "(415) 155-0123",
    "555-0123", "+1 (604) 555-0199", "(800) 555-0199", "(900) 555-0199", "(911) 555-0199",
]


def _library_email(value: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError:
        return "invalid"


def _library_phone(value: str, region: str) -> str:
    import phonenumbers

    try:
        n = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return "invalid"
    if not phonenumbers.is_valid_number(n):
        return "invalid"
    return phonenumbers.format_number(n, phonenumbers.PhoneNumberFormat.E164)


@pytest.mark.parametrize("value", EMAILS)
def test_email_fast_path_agrees_with_email_validator(value: str) -> None:
    from hub.pims.normalise import normalise_email

    try:
        ours = normalise_email(value)
    except ValueError:
        ours = "invalid"
    assert ours == _library_email(value)


@pytest.mark.parametrize("region", ["US", "CA", "GB"])
@pytest.mark.parametrize("value", PHONES)
def test_phone_fast_path_agrees_with_phonenumbers(value: str, region: str) -> None:
    from hub.pims.normalise import normalise_phone

    try:
        ours = normalise_phone(value, region)
    except ValueError:
        ours = "invalid"
    assert ours == _library_phone(value, region)


def test_generated_exports_agree() -> None:
    from hub.pims.normalise import normalise_email, normalise_phone
    from hub.testing.exports import generate

    data = generate(300, patients=0, reminders=0, appointments=0, seed=21)
    for row in data.clients:
        if row[7]:
            assert normalise_email(row[7]) == _library_email(row[7])
        for phone in row[8:11]:
            if phone:
                assert normalise_phone(phone, "US") == _library_phone(phone, "US")
