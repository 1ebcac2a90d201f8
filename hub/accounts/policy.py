"""Types of the accounts domain's policy hooks, owned by the core so that the hub and any
plugin (the built-in rules in ``plugins/policies/``, or a house rule) share them.

``vethub_switch_decision(request, facts: SwitchFacts) -> Decision | None`` and
``vethub_onboarding_missing_fields(request: dict, company) -> list[str]`` (names; :func:`label`
turns one into the words used in the email to the practice).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


class SwitchKind(StrEnum):
    """Whether a switch replaces the practice's company or adds a second one."""
    MOVE = "move"  # move the account from the current company to the new one
    ADD = "add"  # keep the current account, add one with the new company for some modalities


class CompanyResponse(StrEnum):
    """The current company's answer to a switch notice; NONE means it has not answered (yet)."""
    APPROVE = "approve"
    OBJECT = "object"
    NONE = "none"


class OperatorDecision(StrEnum):
    """An operator's ruling on an escalated switch; NONE means no ruling yet."""
    APPROVE = "approve"
    REJECT = "reject"
    NONE = "none"


class Outcome(StrEnum):
    """What the switch policy says happens next to a request (go ahead, wait, notify, escalate)."""
    SWITCH_NOW = "switch_now"
    NOTIFY_CURRENT = "notify_current"
    WAIT = "wait"
    SWITCH_APPROVED = "switch_approved"
    SWITCH_WITHOUT_PERMISSION = "switch_without_permission"
    ESCALATE_TO_OPERATOR = "escalate_to_operator"
    OPERATOR_APPROVED = "operator_approved"
    OPERATOR_REJECTED = "operator_rejected"
    ADD_COMPANY = "add_company"


#: Outcomes after which the account is moved (or the new company added).
GO_OUTCOMES = frozenset(
    {
        Outcome.SWITCH_NOW,
        Outcome.SWITCH_APPROVED,
        Outcome.SWITCH_WITHOUT_PERMISSION,
        Outcome.OPERATOR_APPROVED,
        Outcome.ADD_COMPANY,
    }
)


@dataclass(frozen=True)
class SwitchWindows:
    """How long a case counts as recent activity, and how long the current company has to answer."""
    activity: timedelta = timedelta(days=365)
    response: timedelta = timedelta(hours=72)


class SwitchRequestLike(Protocol):
    """What the policy reads from the request (the ORM row satisfies it)."""

    kind: str
    modalities: list[str] | None


@dataclass(frozen=True)
class SwitchFacts:
    """Everything the rules need, gathered by the service; all datetimes tz-aware UTC."""

    now: datetime
    requested_at: datetime
    last_case_at: datetime | None
    windows: SwitchWindows = field(default_factory=SwitchWindows)
    notified_at: datetime | None = None
    response: CompanyResponse = CompanyResponse.NONE
    responded_at: datetime | None = None
    operator_decision: OperatorDecision = OperatorDecision.NONE
    current_modalities: Sequence[str] = ()

    @property
    def deadline(self) -> datetime | None:
        return None if self.notified_at is None else self.notified_at + self.windows.response


@dataclass(frozen=True)
class Decision:
    """The policy's verdict on a switch request: outcome, reason, and any effect or deadline."""
    outcome: Outcome
    reason: str
    effect: str | None = None  # "move" | "add" when the outcome goes ahead, else None
    deadline: datetime | None = None

    @property
    def goes_ahead(self) -> bool:
        return self.outcome in GO_OUTCOMES


#: Human labels for onboarding field names, used in the missing-information email.
LABELS: dict[str, str] = {
    "practice_name": "Practice name",
    "contact_name": "Contact name",
    "email": "Email address",
    "phone": "Phone number",
    "address": "Postal address",
    "address.line1": "Address (street)",
    "address.city": "Address (city)",
    "address.postcode": "Address (postcode)",
    "address.country": "Address (country)",
    "pims": "Practice-management system (PIMS)",
    "imaging_software": "Imaging software",
    "modalities": "Modalities",
    "company": "Company",
}


def label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())
