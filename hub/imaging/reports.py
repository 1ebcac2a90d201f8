"""The company's report on a case, the practice's email, and the owner's "results are ready".

A report is never edited: a second report on a reported case is an addendum, linked to the
first. The first report makes the case ``reported``; each report emails the practice with the
company in Cc. When the practice marks a report shareable, the pet's owner (the PIMS client of
the case's patient) may be sent a plain "results are ready, call us" message through the
normal contact verdict (category ``results``) — never the report itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub import audit
from hub.db.models import Company, Practice
from hub.errors import Conflict, Invalid, NotFound
from hub.imaging.case_status import can_move, change_status
from hub.imaging.models import Case, CaseReport, CaseStatus
from hub.messaging import links
from hub.messaging.models import Communication
from hub.messaging.outbound import queue_communication, queue_email
from hub.pims.models import Patient

if TYPE_CHECKING:
    from hub.core import Hub


async def reports_of(session: AsyncSession, case_id: int) -> list[CaseReport]:
    return list((await session.execute(
        select(CaseReport).where(CaseReport.case_id == case_id).order_by(CaseReport.id))).scalars())


async def add_report(
    session: AsyncSession, hub: Hub, case: Case, *, text: str, radiologist: str, actor: str,
    pdf: bytes | None = None, source: str = "api", sop_instance_uid: str | None = None,
) -> CaseReport:
    """Record a report (or, on a reported case, an addendum to its first report) and email
    the practice (flushes)."""
    if not text.strip() and pdf is None:
        raise Invalid("a report needs its text or a PDF", code="empty_report", field="text")
    if not radiologist.strip():
        raise Invalid("a report is signed with the reading radiologist's name", field="radiologist")
    existing = await reports_of(session, case.id)
    if not existing and not can_move(case.status, CaseStatus.REPORTED):
        raise Conflict(f"a {case.status} case cannot be reported", code="invalid_transition",
                       field="status")
    now = hub.clock.now()
    report = CaseReport(case_id=case.id, addendum_to_id=existing[0].id if existing else None,
                        text=text, radiologist=radiologist.strip(), pdf=pdf, source=source,
                        sop_instance_uid=sop_instance_uid, created_by=actor, created_at=now)
    session.add(report)
    await session.flush()
    if not existing:
        case.reported_at = now
        await change_status(session, hub, case, CaseStatus.REPORTED, actor=actor,
                            note=f"read by {report.radiologist}", data={"report_id": report.id})
    await audit.record(session, actor, "case.addendum" if existing else "case.report", "case",
                       case.id, after={"report_id": report.id, "source": source},
                       company_id=case.company_id, practice_id=case.practice_id)
    await _notify_practice(session, hub, case, report)
    return report


async def _notify_practice(session: AsyncSession, hub: Hub, case: Case, report: CaseReport) -> None:
    practice = await session.get(Practice, case.practice_id)
    company = await session.get(Company, case.company_id) if case.company_id else None
    if practice is None or not practice.email:
        return
    context = {
        "case_id": case.id, "addendum": report.addendum_to_id is not None,
        "company_name": company.name if company else "", "radiologist": report.radiologist,
        "report_text": report.text, "has_pdf": report.pdf is not None,
        "patient_name": (case.patient or {}).get("name"),
        "report_url": links.public_url(hub, f"/api/cases/{case.id}/reports/{report.id}/file"),
        "hub_name": hub.config.hub.name,
    }
    cc = (company.email,) if company is not None and company.email else ()
    await queue_email(session, hub, to=practice.email, template="case_reported", context=context,
                      category="account", cc=cc, practice_id=practice.id,
                      company_id=case.company_id)


async def find_report(session: AsyncSession, case: Case, report_id: int) -> CaseReport:
    report = await session.get(CaseReport, report_id)
    if report is None or report.case_id != case.id:
        raise NotFound.of("report")
    return report


async def share_with_owner(
    session: AsyncSession, hub: Hub, case: Case, report: CaseReport, *, actor: str,
    notify_owner: bool = True,
) -> Communication | None:
    """Mark the report shareable; with ``notify_owner``, queue the owner's "results are
    ready, call us" message (its verdict decides whether and how it goes). Returns the
    communication, or None when no owner could be matched."""
    if not report.shareable:
        report.shareable, report.shared_by, report.shared_at = True, actor, hub.clock.now()
        await audit.record(session, actor, "case.report_shared", "case", case.id,
                           after={"report_id": report.id}, company_id=case.company_id,
                           practice_id=case.practice_id)
    if not notify_owner:
        return None
    if case.pims_patient_id is None:
        raise Conflict("the case's patient is not matched to a PIMS patient, so its owner is "
                       "unknown", code="no_owner", field="pims_patient_id")
    from hub.imaging.patients import owner_of

    patient = await session.get(Patient, case.pims_patient_id)
    client = await owner_of(session, patient) if patient is not None else None
    if patient is None or client is None:
        raise Conflict("the case's PIMS patient has no owner on file", code="no_owner")
    return await queue_communication(
        session, hub, client_id=client.id, template="results_ready", category="results",
        channels=("email", "sms"), context={"patient_name": patient.name, "case_id": case.id},
    )
