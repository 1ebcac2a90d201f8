"""The cases API's declared bodies, and the views of a case and a report it answers with."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.imaging.models import (
    Case,
    CaseAttachment,
    CaseInstanceForward,
    CaseReport,
    CaseStatus,
    CaseStatusChange,
    Urgency,
)
from hub.imaging.turnaround import is_overdue
from hub.web.contract import Id, RequestModel, ResponseModel

if TYPE_CHECKING:
    from hub.core import Hub


class AttachmentIn(RequestModel):
    """A file attached to a case submission (a referral letter, a photo), base64-encoded."""
    filename: str = Field(min_length=1, max_length=200, pattern=r"^[^/\\\x00-\x1f\"]+$")
    content_type: Literal["application/pdf", "image/png", "image/jpeg"]
    content_base64: str = Field(max_length=8 * 1024 * 1024)


class CaseCreate(RequestModel):
    """Body that submits a study for reading: the clinical question, urgency and attachments."""
    study_id: Id
    clinical_history: str = Field("", max_length=20_000)
    question: str = Field("", max_length=4_000)
    urgency: Urgency = Urgency.ROUTINE
    pims_patient_id: Id | None = None
    second_opinion: bool = False
    allow_incomplete: bool = Field(False, description="submit a study still receiving images")
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=5)


class ReportIn(RequestModel):
    """Body of a radiologist's report (text, optional PDF) on a case, or an addendum to one."""
    text: str = Field("", max_length=100_000)
    radiologist: str = Field(min_length=1, max_length=200)
    pdf_base64: str | None = Field(None, max_length=14 * 1024 * 1024)


class ShareIn(RequestModel):
    """Body that makes a case's report shareable; notify_owner also messages the pet owner."""
    notify_owner: bool = True


class HistoryOut(ResponseModel):
    """One status change in a case's history: when, to what, by whom and why."""
    at: datetime
    status: CaseStatus
    actor: str | None
    note: str | None
    data: dict[str, Any] | None


class AttachmentOut(ResponseModel):
    """An attachment of a case as listed in its details (the content is fetched separately)."""
    id: int
    filename: str
    content_type: str
    size_bytes: int


class ForwardOut(ResponseModel):
    """The forwarding state of one instance of the case's study to the reading company."""
    instance_id: int
    status: str
    status_code: str | None
    comment: str | None
    attempts: int


class ReportOut(ResponseModel):
    """A report or addendum on a case, as the API returns it."""
    id: int
    case_id: int
    addendum_to_id: int | None
    text: str
    radiologist: str
    has_pdf: bool
    source: str
    created_by: str
    created_at: datetime
    shareable: bool


class ReportList(ResponseModel):
    """Response body listing a case's reports and addenda."""
    items: list[ReportOut]


class ShareOut(ResponseModel):
    """Response body of a report share: the report and the message sent to the owner, if any."""
    report: ReportOut
    communication_id: int | None
    channel: str | None
    status: str | None
    verdict: str | None


class CaseSummary(ResponseModel):
    """A case as listed: its study, reading company, status, urgency and timing."""
    id: int
    practice_id: int
    study_id: int
    account_id: int | None
    company_id: int | None
    status: CaseStatus
    urgency: Urgency
    delivery: str | None
    second_opinion: bool
    patient: dict[str, Any]
    clinical_history: str
    question: str
    submitted_by: str
    auto_submitted: bool
    route_reason: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    delivered_at: datetime | None
    reported_at: datetime | None
    due_at: datetime | None
    overdue: bool


class CaseDetail(CaseSummary):
    """Response body of one case: the summary plus history, attachments, forwarding and reports."""
    status_history: list[HistoryOut]
    attachments: list[AttachmentOut]
    instances: list[ForwardOut]
    reports: list[ReportOut]


class CaseList(ResponseModel):
    """Response body of the case list."""
    items: list[CaseSummary]


def case_summary(case: Case, now: datetime) -> CaseSummary:
    return CaseSummary(
        id=case.id, practice_id=case.practice_id, study_id=case.study_id,
        account_id=case.account_id, company_id=case.company_id, status=CaseStatus(case.status),
        urgency=Urgency(case.urgency), delivery=case.delivery, second_opinion=case.second_opinion,
        patient=case.patient or {}, clinical_history=case.clinical_history, question=case.question,
        submitted_by=case.submitted_by, auto_submitted=case.auto_submitted,
        route_reason=case.route_reason, failure_reason=case.failure_reason,
        created_at=case.created_at, updated_at=case.updated_at, delivered_at=case.delivered_at,
        reported_at=case.reported_at, due_at=case.due_at,
        overdue=case.overdue_at is not None or is_overdue(case, now),
    )


def report_out(r: CaseReport) -> ReportOut:
    return ReportOut(id=r.id, case_id=r.case_id, addendum_to_id=r.addendum_to_id, text=r.text,
                     radiologist=r.radiologist, has_pdf=r.pdf is not None, source=r.source,
                     created_by=r.created_by, created_at=r.created_at, shareable=r.shareable)


async def case_detail(session: AsyncSession, hub: Hub, case: Case) -> CaseDetail:
    history = (await session.execute(select(CaseStatusChange).where(
        CaseStatusChange.case_id == case.id).order_by(CaseStatusChange.id))).scalars()
    attachments = (await session.execute(
        select(CaseAttachment.id, CaseAttachment.filename, CaseAttachment.content_type,
               CaseAttachment.size_bytes).where(CaseAttachment.case_id == case.id)
        .order_by(CaseAttachment.id))).all()
    forwards = (await session.execute(select(CaseInstanceForward).where(
        CaseInstanceForward.case_id == case.id).order_by(CaseInstanceForward.instance_id))).scalars()
    reports = (await session.execute(select(CaseReport).where(
        CaseReport.case_id == case.id).order_by(CaseReport.id))).scalars()
    return CaseDetail(
        **case_summary(case, hub.clock.now()).model_dump(),
        status_history=[HistoryOut(at=h.at, status=CaseStatus(h.status), actor=h.actor, note=h.note,
                                   data=h.data) for h in history],
        attachments=[AttachmentOut(id=a.id, filename=a.filename, content_type=a.content_type,
                                   size_bytes=a.size_bytes) for a in attachments],
        instances=[ForwardOut(instance_id=f.instance_id, status=f.status,
                              status_code=f"0x{f.status_code:04X}" if f.status_code is not None else None,
                              comment=f.comment, attempts=f.attempts) for f in forwards],
        reports=[report_out(r) for r in reports],
    )
