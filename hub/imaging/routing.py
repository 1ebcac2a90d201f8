"""The data a case-routing policy decides over, and its typed verdict.

The core gathers these and passes them to ``vethub_route_case(case, study, accounts)``; a
policy returns a :class:`RouteDecision` (an account, or a refusal with its reason) or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CaseRequest:
    """The case being routed, as the routing policy sees it."""
    practice_id: int
    study_id: int
    clinical_history: str
    question: str
    submitted_by: str
    auto_submitted: bool = False
    urgency: str = "routine"  # routine, priority, stat


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """The study of the case being routed, as the routing policy sees it."""
    id: int
    practice_id: int
    study_instance_uid: str
    modality: str | None  # of the first instance received
    modalities: tuple[str, ...]  # every modality seen in the study, in order of arrival
    instance_count: int
    status: str


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """One account that could read the case, as the routing policy sees it."""
    account_id: int
    company_id: int
    company_name: str
    company_modalities: tuple[str, ...]  # what the company reads
    account_modalities: tuple[str, ...]  # what this account covers (empty: all the company reads)
    approved_for_access: bool
    status: str
    auto_submit: bool

    def reads(self, modality: str) -> bool:
        if modality not in self.company_modalities:
            return False
        return not self.account_modalities or modality in self.account_modalities


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where a case goes (``account_id``), or why it goes nowhere (``account_id`` None)."""

    account_id: int | None
    reason: str

    @property
    def routed(self) -> bool:
        return self.account_id is not None

    @classmethod
    def to(cls, account_id: int, reason: str) -> RouteDecision:
        return cls(account_id, reason)

    @classmethod
    def refuse(cls, reason: str) -> RouteDecision:
        return cls(None, reason)
