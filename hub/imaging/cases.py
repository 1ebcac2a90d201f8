"""Cases: a study a practice submits with its question, routed to the company that reads it.

:func:`submit_case` checks, in this order: the study is the caller's practice's (404); the
``vethub_route_case`` policy found an account (422 ``no_route`` naming the modality) that is
approved (403 naming the company to contact); the study is complete unless the caller says
otherwise, and not already a standing case unless a second opinion is asked for (409). Then it
matches the patient, records the case, its attachments and its history, arms its turnaround
check and starts its delivery (:mod:`hub.imaging.delivery`), all in the caller's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, Select, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit, events
from hub.auth import Principal
from hub.db.models import Account, Company
from hub.errors import Conflict, Forbidden, Invalid, NotFound
from hub.imaging.case_status import change_status
from hub.imaging.delivery import dispatch
from hub.imaging.models import (
    RECEIVING,
    Case,
    CaseAttachment,
    CaseStatus,
    Study,
    Urgency,
)
from hub.imaging.patients import match_patient
from hub.imaging.routing import AccountFacts, CaseRequest, RouteDecision
from hub.imaging.service import study_facts
from hub.imaging.turnaround import arm, due_at

if TYPE_CHECKING:
    from hub.core import Hub

__all__ = ["Attachment", "CaseSubmission", "DuplicateCase", "cancel_case",
           "find_case", "submit_case", "visible_cases", "visible_condition"]

log = logging.getLogger(__name__)

AUTO_SUBMITTER = "auto-submit"
# A case on the same study that still stands: a new one would be a duplicate.
STANDING = (CaseStatus.SUBMITTED, CaseStatus.ROUTED, CaseStatus.DELIVERED, CaseStatus.REPORTED)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A decoded attachment ready to be stored with a new case."""
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True, slots=True)
class CaseSubmission:
    """What a practice submits; ``allow_incomplete`` submits a study still receiving images."""

    study_id: int
    clinical_history: str = ""
    question: str = ""
    urgency: Urgency = Urgency.ROUTINE
    pims_patient_id: int | None = None
    second_opinion: bool = False
    allow_incomplete: bool = False
    attachments: Sequence[Attachment] = field(default_factory=tuple)


class DuplicateCase(Conflict):
    """The study is already a standing case; ``case_id`` names it."""

    def __init__(self, case_id: int | None) -> None:
        which = f"as case {case_id}" if case_id is not None else "meanwhile"
        super().__init__(f"this study was already submitted {which}; ask for a second "
                         "opinion to submit it again", code="duplicate_case", field="study_id")
        self.case_id = case_id


def visible_condition(role: str) -> ColumnElement[bool] | None:
    """Which cases a caller of ``role`` may see (None: all), with the caller's ids as the
    parameters (:meth:`hub.auth.Principal.tenant_params`): an operator all, a company admin the cases routed to
    its company (also after the practice moved away), practice staff their practice's."""
    if role == "company_admin":
        return Case.company_id == bindparam("scope_company")
    if role != "operator":
        return Case.practice_id == bindparam("scope_practice")
    return None


def visible_cases(principal: Principal) -> Select[Case]:
    """The cases a caller may see (:func:`visible_condition`), the caller's ids bound in."""
    condition = visible_condition(principal.role)
    stmt = select(Case)
    return stmt if condition is None else stmt.where(condition).params(principal.tenant_params())


async def find_case(session: AsyncSession, principal: Principal, case_id: int) -> Case:
    """The case if the caller may see it; 404 alike for a missing case and another tenant's."""
    case = (await session.execute(visible_cases(principal).where(Case.id == case_id))).scalar_one_or_none()
    if case is None:
        raise NotFound.of("case")
    return case


async def account_facts(session: AsyncSession, practice_id: int) -> list[AccountFacts]:
    rows = await session.execute(
        select(Account, Company).join(Company, Company.id == Account.company_id)
        .where(Account.practice_id == practice_id).order_by(Account.id)
    )
    return [
        AccountFacts(
            account_id=account.id, company_id=company.id, company_name=company.name,
            company_modalities=tuple(company.modalities or ()),
            account_modalities=tuple(account.modalities or ()),
            approved_for_access=account.approved_for_access, status=account.status,
            auto_submit=account.auto_submit,
        )
        for account, company in rows
    ]


def decide_route(hub: Hub, request: CaseRequest, study: Study, accounts: list[AccountFacts]) -> RouteDecision:
    decision = hub.pm.hook.vethub_route_case(case=request, study=study_facts(study), accounts=accounts)
    if decision is None:
        return RouteDecision.refuse("no routing policy chose an account for this case")
    return decision


def _choose(decision: RouteDecision, accounts: list[AccountFacts]) -> AccountFacts:
    if not decision.routed:
        raise Invalid(f"the case cannot be routed: {decision.reason}", code="no_route")
    chosen = next((a for a in accounts if a.account_id == decision.account_id), None)
    if chosen is None:
        raise Invalid("the case cannot be routed: the routing policy chose an account of "
                      "another practice", code="no_route")
    if not chosen.approved_for_access:
        raise Forbidden(
            f"the practice's account with {chosen.company_name} is not approved for access "
            f"(new or suspended); contact {chosen.company_name} to submit cases. "
            "Images sent meanwhile are kept.", code="account_not_approved")
    return chosen


async def _check_study(session: AsyncSession, study: Study, sub: CaseSubmission) -> None:
    if study.status == RECEIVING and not sub.allow_incomplete:
        raise Conflict("the study is still receiving images; submit it once it is complete, "
                       "or say allow_incomplete to submit it now", code="study_receiving",
                       field="study_id")
    if not sub.second_opinion:
        existing = await session.scalar(
            select(Case.id).where(Case.study_id == study.id, Case.status.in_(STANDING))
            .order_by(Case.id).limit(1))
        if existing is not None:
            raise DuplicateCase(existing)


async def submit_case(
    session: AsyncSession, hub: Hub, sub: CaseSubmission, *, actor: str,
    practice_ids: Sequence[int] | None = None, auto_submitted: bool = False,
) -> Case:
    """Check, route, record and start delivering a case (flushes). ``practice_ids`` limits
    the studies the caller may name (None: any)."""
    study = await session.get(Study, sub.study_id)
    if study is None or (practice_ids is not None and study.practice_id not in practice_ids):
        raise NotFound.of("study")
    if study.instance_count <= 0:
        raise Invalid("the study has no stored instance", code="study_empty", field="study_id")
    request = CaseRequest(practice_id=study.practice_id, study_id=study.id,
                          clinical_history=sub.clinical_history, question=sub.question,
                          submitted_by=actor, auto_submitted=auto_submitted, urgency=sub.urgency)
    accounts = await account_facts(session, study.practice_id)
    decision = decide_route(hub, request, study, accounts)
    chosen = _choose(decision, accounts)  # who may read it comes first: 422 / 403
    await _check_study(session, study, sub)
    patient = await match_patient(session, study, sub.pims_patient_id)
    company = await session.get(Company, chosen.company_id)
    assert company is not None
    now = hub.clock.now()
    case = Case(
        practice_id=study.practice_id, study_id=study.id, account_id=chosen.account_id,
        company_id=chosen.company_id, status=CaseStatus.SUBMITTED,
        clinical_history=sub.clinical_history, question=sub.question, urgency=sub.urgency,
        second_opinion=sub.second_opinion, patient=patient.shown,
        pims_patient_id=patient.pims_patient_id, submitted_by=actor,
        auto_submitted=auto_submitted, route_reason=decision.reason, created_at=now,
        updated_at=now, due_at=now + due_at(company, sub.urgency),
    )
    try:
        async with session.begin_nested():  # a lost race leaves the caller's session usable
            session.add(case)
            await session.flush()
    except IntegrityError as err:  # another submission of the study won the race
        raise DuplicateCase(None) from err
    session.add_all(CaseAttachment(case_id=case.id, filename=a.filename, content_type=a.content_type,
                                   size_bytes=len(a.content), content=a.content) for a in sub.attachments)
    await change_status(session, hub, case, CaseStatus.SUBMITTED, actor=actor, first=True,
                        note=f"by {actor}")
    await change_status(session, hub, case, CaseStatus.ROUTED, actor="routing policy",
                        note=decision.reason,
                        data={"account_id": chosen.account_id, "company_id": chosen.company_id})
    await arm(session, hub, case)
    await dispatch(session, hub, case, company)
    await audit.record(
        session, actor, "case.submit", "case", case.id,
        after={"study_id": study.id, "company_id": chosen.company_id, "reason": decision.reason,
               "urgency": str(sub.urgency), "second_opinion": sub.second_opinion},
        company_id=chosen.company_id, practice_id=study.practice_id,
    )
    await session.flush()
    return case


async def standing_case(session: AsyncSession, study_id: int) -> Case | None:
    return (await session.execute(
        select(Case).where(Case.study_id == study_id, Case.status.in_(STANDING),
                           Case.second_opinion.is_(False)).order_by(Case.id).limit(1)
    )).scalar_one_or_none()


async def cancel_case(session: AsyncSession, hub: Hub, case: Case, *, actor: str, reason: str) -> Case:
    """The practice withdraws its case; only before delivery (409 afterwards)."""
    if case.status not in (CaseStatus.SUBMITTED, CaseStatus.ROUTED):
        raise Conflict(f"a {case.status} case cannot be cancelled (only before delivery)",
                       code="invalid_transition", field="status")
    await change_status(session, hub, case, CaseStatus.CANCELLED, actor=actor, note=reason or None)
    await audit.record(session, actor, "case.cancel", "case", case.id, after={"reason": reason},
                       company_id=case.company_id, practice_id=case.practice_id)
    return case


async def auto_submit(session: AsyncSession, hub: Hub, study: Study) -> Case | None:
    """Submit a stable study as a case when the account it routes to asks for that."""
    accounts = await account_facts(session, study.practice_id)
    if not any(a.auto_submit for a in accounts):
        return None
    if await session.scalar(select(Case.id).where(Case.study_id == study.id).limit(1)) is not None:
        return None
    request = CaseRequest(practice_id=study.practice_id, study_id=study.id, clinical_history="",
                          question="", submitted_by=AUTO_SUBMITTER, auto_submitted=True)
    decision = decide_route(hub, request, study, accounts)
    chosen = next((a for a in accounts if a.account_id == decision.account_id), None)
    if chosen is None or not chosen.auto_submit:
        return None
    try:
        # every refusal is raised before anything is written
        return await submit_case(session, hub, CaseSubmission(study_id=study.id),
                                 actor=AUTO_SUBMITTER, auto_submitted=True)
    except (Invalid, Forbidden, Conflict, NotFound) as refusal:
        await events.record(
            session, "case.auto_submit_refused",
            f"study {study.study_instance_uid} not auto-submitted: {refusal.message}",
            practice_id=study.practice_id, data={"study_id": study.id, "code": refusal.code},
        )
        return None

