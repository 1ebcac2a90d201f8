"""Cases: a study submitted for review, routed by policy, forwarded to the company's peer.

:func:`submit_case` asks the ``vethub_route_case`` policy for an account, refuses with the
reason when there is none or when that account is not approved for access, and otherwise
records the case as routed and enqueues its forward (one durable job per case, handled by an
outbound image transport) in the same transaction.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit, events
from hub.db.models import Account, Company
from hub.imaging.models import (
    CASE_ROUTED,
    CASE_SUBMITTED,
    Case,
    CaseInstanceForward,
    CaseStatusChange,
    Study,
)
from hub.imaging.routing import AccountFacts, CaseRequest, RouteDecision
from hub.imaging.service import study_facts

if TYPE_CHECKING:
    from hub.core import Hub

log = logging.getLogger(__name__)

FORWARD_JOB = "dicom.forward_case"
AUTO_SUBMITTER = "auto-submit"


class CaseRefused(Exception):
    """A case cannot be submitted; ``code`` is stable for API clients, ``message`` says why."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


async def account_facts(session: AsyncSession, practice_id: int) -> list[AccountFacts]:
    rows = await session.execute(
        select(Account, Company)
        .join(Company, Company.id == Account.company_id)
        .where(Account.practice_id == practice_id)
        .order_by(Account.id)
    )
    return [
        AccountFacts(
            account_id=account.id,
            company_id=company.id,
            company_name=company.name,
            company_modalities=tuple(company.modalities or ()),
            account_modalities=tuple(account.modalities or ()),
            approved_for_access=account.approved_for_access,
            status=account.status,
            auto_submit=account.auto_submit,
        )
        for account, company in rows
    ]


def decide_route(hub: Hub, request: CaseRequest, study: Study, accounts: list[AccountFacts]):
    decision = hub.pm.hook.vethub_route_case(
        case=request, study=study_facts(study), accounts=accounts
    )
    if decision is None:
        return RouteDecision.refuse("no routing policy chose an account for this case")
    return decision


async def add_status(
    session: AsyncSession,
    hub: Hub,
    case: Case,
    status: str,
    note: str | None = None,
    data: dict | None = None,
) -> None:
    now = hub.clock.now()
    case.status = status
    case.updated_at = now
    session.add(CaseStatusChange(case_id=case.id, at=now, status=status, note=note, data=data))


async def submit_case(
    session: AsyncSession, hub: Hub, request: CaseRequest, *, study: Study | None = None
) -> Case:
    """Route and record a case (flushes); raises :class:`CaseRefused` with the reason."""
    if study is None:
        study = await session.get(Study, request.study_id)
    if study is None or study.practice_id != request.practice_id:
        raise CaseRefused("study_not_found", f"study {request.study_id} not found", 404)
    if study.instance_count <= 0:
        raise CaseRefused("study_empty", "the study has no stored instance")
    accounts = await account_facts(session, request.practice_id)
    decision = decide_route(hub, request, study, accounts)
    if not decision.routed:
        raise CaseRefused("no_route", f"the case cannot be routed: {decision.reason}")
    chosen = next((a for a in accounts if a.account_id == decision.account_id), None)
    if chosen is None:
        raise CaseRefused("no_route", "the routing policy chose an account of another practice")
    if not chosen.approved_for_access:
        raise CaseRefused(
            "account_not_approved",
            f"the practice's account with {chosen.company_name} is not approved for access "
            f"(new or suspended); contact {chosen.company_name} to submit cases. "
            "Images sent meanwhile are kept.",
            403,
        )
    if chosen.status not in ("active",):
        raise CaseRefused(
            "account_inactive",
            f"the practice's account with {chosen.company_name} is {chosen.status}",
            403,
        )

    now = hub.clock.now()
    case = Case(
        practice_id=request.practice_id,
        study_id=study.id,
        account_id=chosen.account_id,
        company_id=chosen.company_id,
        status=CASE_SUBMITTED,
        clinical_history=request.clinical_history,
        question=request.question,
        submitted_by=request.submitted_by,
        auto_submitted=request.auto_submitted,
        route_reason=decision.reason,
        created_at=now,
        updated_at=now,
    )
    session.add(case)
    await session.flush()
    await add_status(session, hub, case, CASE_SUBMITTED, note=f"by {request.submitted_by}")
    await add_status(
        session,
        hub,
        case,
        CASE_ROUTED,
        note=decision.reason,
        data={"account_id": chosen.account_id, "company_id": chosen.company_id},
    )
    await hub.jobs.enqueue(
        session, FORWARD_JOB, {"case_id": case.id}, idempotency_key=f"{FORWARD_JOB}:{case.id}"
    )
    await audit.record(
        session,
        request.submitted_by,
        "case.submit",
        "case",
        case.id,
        after={"study_id": study.id, "company_id": chosen.company_id, "reason": decision.reason},
        company_id=chosen.company_id,
        practice_id=request.practice_id,
    )
    await session.flush()
    return case


async def auto_submit(session: AsyncSession, hub: Hub, study: Study) -> Case | None:
    """Submit a stable study as a case when the account it routes to asks for that."""
    accounts = await account_facts(session, study.practice_id)
    if not any(a.auto_submit for a in accounts):
        return None
    exists = await session.scalar(select(Case.id).where(Case.study_id == study.id).limit(1))
    if exists is not None:
        return None
    request = CaseRequest(
        practice_id=study.practice_id,
        study_id=study.id,
        clinical_history="",
        question="",
        submitted_by=AUTO_SUBMITTER,
        auto_submitted=True,
    )
    decision = decide_route(hub, request, study, accounts)
    chosen = next((a for a in accounts if a.account_id == decision.account_id), None)
    if chosen is None or not chosen.auto_submit:
        return None
    try:
        return await submit_case(session, hub, request, study=study)
    except CaseRefused as refusal:
        await events.record(
            session,
            "case.auto_submit_refused",
            f"study {study.study_instance_uid} not auto-submitted: {refusal.message}",
            practice_id=study.practice_id,
            data={"study_id": study.id, "code": refusal.code},
        )
        return None


async def case_detail(session: AsyncSession, case: Case) -> dict:
    history = (
        await session.execute(
            select(CaseStatusChange)
            .where(CaseStatusChange.case_id == case.id)
            .order_by(CaseStatusChange.id)
        )
    ).scalars()
    forwards = (
        await session.execute(
            select(CaseInstanceForward)
            .where(CaseInstanceForward.case_id == case.id)
            .order_by(CaseInstanceForward.instance_id)
        )
    ).scalars()
    body = case_summary(case)
    body["status_history"] = [
        {"at": h.at.isoformat(), "status": h.status, "note": h.note, "data": h.data}
        for h in history
    ]
    body["instances"] = [
        {
            "instance_id": f.instance_id,
            "status": f.status,
            "status_code": f"0x{f.status_code:04X}" if f.status_code is not None else None,
            "comment": f.comment,
            "attempts": f.attempts,
        }
        for f in forwards
    ]
    return body


def case_summary(case: Case) -> dict:
    return {
        "id": case.id,
        "practice_id": case.practice_id,
        "study_id": case.study_id,
        "account_id": case.account_id,
        "company_id": case.company_id,
        "status": case.status,
        "clinical_history": case.clinical_history,
        "question": case.question,
        "submitted_by": case.submitted_by,
        "auto_submitted": case.auto_submitted,
        "route_reason": case.route_reason,
        "created_at": case.created_at.isoformat(),
        "updated_at": case.updated_at.isoformat(),
        "delivered_at": case.delivered_at.isoformat() if case.delivered_at else None,
    }
