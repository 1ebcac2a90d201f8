"""Built-in onboarding rule: which fields an account request still lacks.

Pure: reads the request's fields and the company's settings, no I/O. A company asks for more with
``settings["onboarding_required_fields"]`` (a list of field names, looked up among the request's
fields and then its ``extra`` answers). Other plugins add names of their own; the hub asks for
the union.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub.accounts.policy import LABELS, label
from hub.hookspecs import hookimpl

__all__ = ["ADDRESS_PARTS", "LABELS", "REQUIRED_FIELDS", "label", "missing_fields"]

#: Fields every request needs, in the order they are listed to the practice.
REQUIRED_FIELDS: tuple[str, ...] = (
    "practice_name",
    "contact_name",
    "email",
    "phone",
    "address",
    "pims",
    "imaging_software",
    "modalities",
    "company",
)

#: Parts of ``address`` that must be filled; a missing part is named ``address.<part>``.
ADDRESS_PARTS: tuple[str, ...] = ("line1", "city", "postcode", "country")

def _get(request: Any, name: str) -> Any:
    if isinstance(request, Mapping):
        if name in request:
            return request[name]
        extra = request.get("extra") or {}
    else:
        if hasattr(request, name):
            return getattr(request, name)
        extra = getattr(request, "extra", None) or {}
    return extra.get(name) if isinstance(extra, Mapping) else None


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | set | dict):
        return len(value) == 0
    return False


def missing_fields(request: Any, company: Any) -> list[str]:
    missing: list[str] = []
    for name in REQUIRED_FIELDS:
        if name == "company":
            if company is None and _blank(_get(request, "company_id")):
                missing.append("company")
            continue
        value = _get(request, name)
        if name == "address":
            if _blank(value) or not isinstance(value, Mapping):
                missing.append("address")
            else:
                missing.extend(f"address.{p}" for p in ADDRESS_PARTS if _blank(value.get(p)))
            continue
        if _blank(value):
            missing.append(name)
    settings = getattr(company, "settings", None) or {}
    for name in settings.get("onboarding_required_fields", ()) or ():
        if name not in missing and _blank(_get(request, name)):
            missing.append(name)
    return missing


@hookimpl
def vethub_onboarding_missing_fields(request: Any, company: Any) -> list[str]:
    """The built-in required fields plus the company's ``onboarding_required_fields``."""
    return missing_fields(request, company)
