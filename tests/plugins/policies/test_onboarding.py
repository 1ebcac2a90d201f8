"""Table-driven tests of the built-in onboarding required-fields rule."""

from __future__ import annotations

from types import SimpleNamespace

import pluggy
import pytest

from plugins.policies import onboarding

COMPANY = SimpleNamespace(id=1, settings={})
STRICT = SimpleNamespace(id=2, settings={"onboarding_required_fields": ["vat_number", "phone"]})

FULL = {
    "practice_name": "Elm Street Vets",
    "contact_name": "Dr Ada Brown",
    "email": "ada@elm.example",
    "phone": "+441632960001",
    "address": {"line1": "1 Elm St", "city": "Leeds", "postcode": "LS1 1AA", "country": "GB"},
    "pims": "ezyVet",
    "imaging_software": "Vet-Rocket",
    "modalities": ["DX", "US"],
    "company_id": 1,
}


def without(*names: str, **changes) -> dict:
    d = {k: v for k, v in FULL.items() if k not in names}
    d.update(changes)
    return d


CASES = [
    ("complete", FULL, COMPANY, []),
    ("empty", {}, None, list(onboarding.REQUIRED_FIELDS)),
    ("blank-strings", without(practice_name="  ", email=""), COMPANY, ["practice_name", "email"]),
    ("no-modalities", without(modalities=[]), COMPANY, ["modalities"]),
    ("no-company", without("company_id"), None, ["company"]),
    (
        "partial-address",
        without(address={"line1": "1 Elm St", "country": "GB"}),
        COMPANY,
        ["address.city", "address.postcode"],
    ),
    ("address-not-a-dict", without(address="1 Elm St"), COMPANY, ["address"]),
    ("company-requires-more", FULL, STRICT, ["vat_number"]),
    ("company-extra-in-extra", {**FULL, "extra": {"vat_number": "GB123"}}, STRICT, []),
    (
        "company-extra-no-duplicates",
        without("phone"),
        STRICT,
        ["phone", "vat_number"],
    ),
]


@pytest.mark.parametrize(
    ("request_", "company", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_missing_fields(request_, company, expected) -> None:
    assert onboarding.missing_fields(request_, company) == expected


def test_object_requests_are_read_by_attribute() -> None:
    req = SimpleNamespace(**without("pims"), extra={})
    assert onboarding.missing_fields(req, COMPANY) == ["pims"]


def test_labels_cover_every_builtin_field() -> None:
    for name in onboarding.REQUIRED_FIELDS:
        assert onboarding.label(name) != name
    assert onboarding.label("vat_number") == "Vat number"


def test_hook_results_are_a_union_across_plugins() -> None:
    from hub import hookspecs
    from hub.hookspecs import hookimpl

    class Insurer:
        @hookimpl
        def vethub_onboarding_missing_fields(self, request, company):
            return [] if request.get("insurer") else ["insurer"]

    pm = pluggy.PluginManager("vethub")
    pm.add_hookspecs(hookspecs)
    pm.register(onboarding, name="onboarding")
    pm.register(Insurer(), name="insurer")
    results = pm.hook.vethub_onboarding_missing_fields(request=without("pims"), company=COMPANY)
    assert sorted(n for r in results for n in r) == ["insurer", "pims"]
