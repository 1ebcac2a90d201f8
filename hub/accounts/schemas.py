"""Declared request bodies and queries of the accounts API (see :mod:`hub.web.contract`).

Every free-text field has its own maximum length (the database column's, or less); the public
account request is limited to a few KB as a whole (``PUBLIC_MAX_BODY``), so an unauthenticated
caller cannot store megabytes that later break a report.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool

from hub.accounts.models import REQUEST_STATES, SWITCH_STATES
from hub.web.contract import Id, RequestModel

PUBLIC_MAX_BODY = 8 * 1024
SMALL_BODY = 4 * 1024

def _ref_text(value: Any) -> Any:
    # a company is named by slug or id: an id arrives as a JSON number
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _split_modalities(value: Any) -> Any:
    # the form (and older clients) send "DX, US"; the model keeps one list type
    return [m for m in re.split(r"[\s,]+", value) if m] if isinstance(value, str) else value


def _scalar(value: Any) -> Any:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ValueError("must be a string, number, boolean or null")
    if isinstance(value, str) and len(value) > 500:
        raise ValueError("must be at most 500 characters")
    return value


Modality = Annotated[str, Field(min_length=1, max_length=8)]
CompanyRef = Annotated[str, BeforeValidator(_ref_text), Field(min_length=1, max_length=100)]
Modalities = Annotated[list[Modality], BeforeValidator(_split_modalities), Field(max_length=20)]
ExtraValue = Annotated[Any, AfterValidator(_scalar)]

RequestState = Literal[REQUEST_STATES]  # type: ignore[valid-type]
SwitchState = Literal[SWITCH_STATES]  # type: ignore[valid-type]


class Address(RequestModel):
    """A practice's postal address as given in an account request; every line optional."""
    line1: str | None = Field(default=None, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str | None = Field(default=None, max_length=100)
    region: str | None = Field(default=None, max_length=100)
    postcode: str | None = Field(default=None, max_length=20)
    country: str | None = Field(default=None, max_length=2)


class AccountRequestFields(RequestModel):
    """The fields of an account request; all optional so that a draft can be saved."""
    company: CompanyRef | None = None
    company_id: Id | None = None
    practice_name: str | None = Field(default=None, max_length=200)
    contact_name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    address: Address | None = None
    pims: str | None = Field(default=None, max_length=100)
    imaging_software: str | None = Field(default=None, max_length=100)
    modalities: Modalities | None = None
    extra: dict[Annotated[str, Field(max_length=100)], ExtraValue] | None = Field(default=None, max_length=30)


class AccountRequestComplete(AccountRequestFields):
    """Body that completes an account request, with the token of a draft being resumed."""
    token: str | None = Field(default=None, max_length=100)


class TokenQuery(RequestModel):
    """Query carrying a set-password or draft token."""
    token: str | None = Field(default=None, max_length=100)


class RequestListQuery(RequestModel):
    """Query filtering the list of account requests by state."""
    state: RequestState | None = None


class SwitchListQuery(RequestModel):
    """Query filtering the list of switch requests by state."""
    state: SwitchState | None = None


class NoBody(RequestModel):
    """A write route that takes no fields: any field sent is refused by name."""


class RejectBody(RequestModel):
    """Body of an operator's rejection of an account request, with the reason for the practice."""
    reason: str = Field(default="", max_length=2000)


class PasswordBody(RequestModel):
    """Body that sets an account's first password using the emailed token."""
    token: str = Field(max_length=100)
    password: str = Field(max_length=1000)


class LoginBody(RequestModel):
    """Body of a practice user's login."""
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)


class AccountPatch(RequestModel):
    """Body of an operator's change to an account; fields left out are not changed."""
    approved_for_access: StrictBool | None = None
    modalities: list[Modality] | None = Field(default=None, max_length=20)
    auto_submit: StrictBool | None = None


class ReportQuery(RequestModel):
    """Query selecting the onboarding report's period, company and output format."""
    date_from: date | None = Field(default=None, alias="from")
    date_to: date | None = Field(default=None, alias="to")
    company: Annotated[str, Field(max_length=100)] | None = None
    format: Literal["json", "csv", "pdf", "html"] = "json"


class SwitchCreate(RequestModel):
    """Body that asks to move a practice to a new company, or to add one for some modalities."""
    practice_id: Id | None = None
    current_company: CompanyRef | None = None
    new_company: CompanyRef | None = None
    kind: Literal["move", "add"] = "move"
    modalities: list[Modality] = Field(default_factory=list, max_length=20)
    requester_name: str | None = Field(default=None, max_length=200)
    requester_email: str | None = Field(default=None, max_length=320)
    requester_authorised: StrictBool | None = None
    statement: str = Field(default="", max_length=10_000)


class SwitchConfirm(RequestModel):
    """An operator confirms a draft: what the email did not say (or said wrongly) is named here;
    the rest is the draft's. The statement is the kept email, not retyped."""

    current_company: CompanyRef | None = None
    new_company: CompanyRef | None = None
    kind: Literal["move", "add"] | None = None
    modalities: list[Modality] = Field(default_factory=list, max_length=20)
    requester_name: str | None = Field(default=None, max_length=200)
    requester_authorised: StrictBool | None = None
    note: str = Field(default="", max_length=2000)


class SwitchDiscard(RequestModel):
    """Body of an operator discarding a switch request, with the reason kept on record."""
    reason: str = Field(min_length=1, max_length=2000)


class SwitchDecision(RequestModel):
    """Body of an operator's ruling on a switch the current company objected to."""
    decision: Literal["approve", "reject"]
    note: str = Field(default="", max_length=2000)
