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
