"""JSON API for studies, cases, reports and turnaround (registered through ``vethub_web_routes``).

Handlers are thin: they parse (declared models), scope (:func:`hub.imaging.cases.find_case`)
and call the services; every rule lives in the services. docs/cases.md describes the routes.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from hub.errors import Forbidden, Invalid, NotFound, TooLarge
from hub.imaging import cases as case_service
from hub.imaging import reports as report_service
from hub.imaging.api_models import (
    AttachmentIn,
    CaseCreate,
    CaseDetail,
    CaseList,
    CaseSummary,
    ReportIn,
    ReportList,
    ReportOut,
    ShareIn,
    ShareOut,
    case_detail,
    case_summary,
    report_out,
)
from hub.imaging.case_list import LIST_LIMIT, case_summary_rows
from hub.imaging.header_fields import header_values
from hub.imaging.models import Case, CaseAttachment, CaseStatus, Instance, Study
from hub.imaging.turnaround import turnaround_rows
from hub.web.auth import get_principal, read_as_caller, require_role
from hub.web.contract import ApiRoutes, Id, Prebuilt, RequestModel, ResponseModel
from hub.web.errors import envelope
from hub.web.keys import HUB_KEY

routes = ApiRoutes(tag="cases")
MAX_ATTACHMENT = 5 * 1024 * 1024
MAX_ATTACHMENTS = 5
MAX_REPORT_PDF = 10 * 1024 * 1024
# base64 grows by 4/3; leave room for the text fields.
CASE_MAX_BODY = MAX_ATTACHMENTS * MAX_ATTACHMENT * 4 // 3 + 256 * 1024
REPORT_MAX_BODY = MAX_REPORT_PDF * 4 // 3 + 256 * 1024
MAGIC: dict[str, tuple[bytes, ...]] = {"application/pdf": (b"%PDF-",), "image/png": (b"\x89PNG\r\n\x1a\n",),
         "image/jpeg": (b"\xff\xd8\xff",)}


class CasePath(RequestModel):
    case_id: Id


class ReportPath(RequestModel):
    case_id: Id
    report_id: Id


class CaseQuery(RequestModel):
    status: CaseStatus | None = None
    overdue: bool | None = None


class CancelIn(RequestModel):
    reason: str = Field("", max_length=2000)


def _decode(data: str, what: str, limit: int, types: Mapping[str, tuple[bytes, ...]],
            content_type: str) -> bytes:
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{what} is not valid base64", code="invalid_base64", field=what) from None
    if len(raw) > limit:
        raise TooLarge(f"{what} is over {limit // (1024 * 1024)} MB", code="too_large", field=what)
    if content_type not in types or not raw.startswith(types[content_type]):
        raise Invalid(f"{what} is not a {content_type} file (PDF, PNG or JPEG only)",
                      code="invalid_attachment", field=what)
    return raw


def _attachments(items: list[AttachmentIn]) -> list[case_service.Attachment]:
    return [case_service.Attachment(a.filename, a.content_type,
                                    _decode(a.content_base64, f"attachments.{i}", MAX_ATTACHMENT,
                                            MAGIC, a.content_type))
            for i, a in enumerate(items)]


@routes.post("/api/cases", summary="Submit a study as a case", body=CaseCreate,
             response=CaseDetail, status=201, errors=(403, 404, 409, 413, 422),
             max_body=CASE_MAX_BODY)
async def create_case(request: web.Request, body: CaseCreate) -> Any:
    """Practice staff (or an operator) submit a study with the clinical history, the question,
    the urgency and optional attachments (base64). 409 ``duplicate_case`` carries the existing
    case; 409 ``study_receiving`` unless ``allow_incomplete``; 422 ``no_route`` names the
    modality; 403 ``account_not_approved`` names the company to contact."""
    principal = require_role(request, "practice_staff", "operator")
    hub = request.app[HUB_KEY]
    sub = case_service.CaseSubmission(
        study_id=body.study_id, clinical_history=body.clinical_history, question=body.question,
        urgency=body.urgency, pims_patient_id=body.pims_patient_id,
        second_opinion=body.second_opinion, allow_incomplete=body.allow_incomplete,
        attachments=_attachments(body.attachments),
    )
    try:
        async with hub.transaction() as session:
            case = await case_service.submit_case(
                session, hub, sub, actor=principal.actor,
                practice_ids=await principal.practice_ids(session))
            return await case_detail(session, hub, case)
    except case_service.DuplicateCase as dup:
        async with hub.sessionmaker() as session:
            existing = (await session.get(Case, dup.case_id) if dup.case_id is not None
                        else await case_service.standing_case(session, body.study_id))
            if existing is None:  # the winner was cancelled meanwhile: let the caller retry
                raise
            # the one error envelope, plus the standing case the caller collided with
            body_out = {**envelope(dup.code, dup.message, dup.field),
                        "case": case_summary(existing, hub.clock.now()).model_dump(mode="json")}
        return web.json_response(body_out, status=409)


@routes.get("/api/cases", summary="List cases", query=CaseQuery, response=CaseList, auth_in_read=True)
async def list_cases(request: web.Request, query: CaseQuery) -> Prebuilt:
    """Scoped: practice staff see their practice's cases, a company admin the cases routed to
    its company, an operator all. ``overdue=true`` lists the cases past their turnaround."""
    now = request.app[HUB_KEY].clock.now()
    # Token, scope and plain rows from the read engine in one hand-off, sent without a model
    # per case: ORM instances and CaseSummary validation were most of this route's CPU (the
    # summary's shape is checked by the contract tests).
    items = await read_as_caller(
        request, lambda conn, principal: case_summary_rows(conn, principal, query.status, now))
    if query.overdue is not None:
        items = [c for c in items if c["overdue"] == query.overdue]
    return Prebuilt({"items": items})


@routes.get("/api/cases/{case_id}", summary="A case with its history", path_params=CasePath,
            response=CaseDetail, errors=(404,))
async def get_case(request: web.Request, path: CasePath) -> CaseDetail:
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, get_principal(request), path.case_id)
        return await case_detail(session, hub, case)


@routes.post("/api/cases/{case_id}/cancel", summary="Withdraw a case before delivery",
             path_params=CasePath, body=CancelIn, response=CaseDetail, errors=(403, 404, 409))
async def cancel_case(request: web.Request, path: CasePath, body: CancelIn) -> CaseDetail:
    principal = require_role(request, "practice_staff", "operator")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        case = await case_service.find_case(session, principal, path.case_id)
        await case_service.cancel_case(session, hub, case, actor=principal.actor, reason=body.reason)
        return await case_detail(session, hub, case)


@routes.get("/api/cases/{case_id}/attachments/{report_id}", summary="Download an attachment",
            path_params=ReportPath, errors=(404,))
async def get_attachment(request: web.Request, path: ReportPath) -> web.Response:
    """``report_id`` is the attachment's id (the path shape is shared with reports)."""
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, get_principal(request), path.case_id)
        row = await session.get(CaseAttachment, path.report_id)
        if row is None or row.case_id != case.id:
            raise NotFound.of("attachment")
    return web.Response(body=row.content, content_type=row.content_type, headers={
        "Content-Disposition": f'attachment; filename="{row.filename}"'})


@routes.post("/api/cases/{case_id}/report", summary="Post the report (or an addendum)",
             path_params=CasePath, body=ReportIn, response=ReportOut, status=201,
             errors=(403, 404, 409, 413, 422), max_body=REPORT_MAX_BODY)
async def post_report(request: web.Request, path: CasePath, body: ReportIn) -> ReportOut:
    """The company the case is routed to (or an operator) reports it; a second report is an
    addendum linked to the first. The practice is emailed, the company in Cc."""
    principal = require_role(request, "company_admin", "operator")
    hub = request.app[HUB_KEY]
    pdf = (_decode(body.pdf_base64, "pdf_base64", MAX_REPORT_PDF, MAGIC, "application/pdf")
           if body.pdf_base64 else None)
    async with hub.transaction() as session:
        case = await case_service.find_case(session, principal, path.case_id)
        report = await report_service.add_report(session, hub, case, text=body.text,
                                                 radiologist=body.radiologist, pdf=pdf,
                                                 actor=principal.actor)
        return report_out(report)


@routes.get("/api/cases/{case_id}/reports", summary="The case's reports and addenda",
            path_params=CasePath, response=ReportList, errors=(404,))
async def list_reports(request: web.Request, path: CasePath) -> ReportList:
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, get_principal(request), path.case_id)
        return ReportList(items=[report_out(r) for r in await report_service.reports_of(session, case.id)])


@routes.get("/api/cases/{case_id}/reports/{report_id}/file", summary="Download a report",
            path_params=ReportPath, errors=(404,))
async def download_report(request: web.Request, path: ReportPath) -> web.Response:
    """The report's PDF when it has one, else its text (``text/plain``)."""
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, get_principal(request), path.case_id)
        report = await report_service.find_report(session, case, path.report_id)
    name = f"case-{case.id}-report-{report.id}"
    if report.pdf is not None:
        return web.Response(body=report.pdf, content_type="application/pdf",
                            headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})
    text = f"Case {case.id} — read by {report.radiologist} at {report.created_at:%Y-%m-%d %H:%M} UTC\n\n{report.text}\n"
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.txt"'})


@routes.post("/api/cases/{case_id}/reports/{report_id}/share",
             summary="Mark a report shareable and tell the owner results are ready",
             path_params=ReportPath, body=ShareIn, response=ShareOut, errors=(403, 404, 409))
async def share_report(request: web.Request, path: ReportPath, body: ShareIn) -> ShareOut:
    principal = require_role(request, "practice_staff", "operator")
    hub = request.app[HUB_KEY]
    async with hub.transaction() as session:
        case = await case_service.find_case(session, principal, path.case_id)
        report = await report_service.find_report(session, case, path.report_id)
        comm = await report_service.share_with_owner(session, hub, case, report,
                                                     actor=principal.actor, notify_owner=body.notify_owner)
        return ShareOut(report=report_out(report), communication_id=comm.id if comm else None,
                        channel=comm.channel if comm else None, status=comm.status if comm else None,
                        verdict=comm.verdict if comm else None)


# --------------------------------------------------------------------------- turnaround


class TurnaroundQuery(RequestModel):
    from_: datetime = Field(alias="from")
    to: datetime
    company_id: Id | None = None


class TurnaroundRowOut(ResponseModel):
    modality: str
    urgency: str
    cases: int
    reported: int
    overdue: int
    median_hours: float | None
    p90_hours: float | None


class TurnaroundOut(ResponseModel):
    company_id: int | None
    start: datetime = Field(serialization_alias="from")
    to: datetime
    rows: list[TurnaroundRowOut]


async def _turnaround(request: web.Request, query: TurnaroundQuery) -> TurnaroundOut:
    principal = require_role(request, "company_admin", "operator")
    if principal.role == "company_admin":
        if query.company_id not in (None, principal.company_id):
            raise Forbidden("a company admin sees its own company's turnaround", field="company_id")
        company_id = principal.company_id
    else:
        company_id = query.company_id
    start, end = query.from_, query.to
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise Invalid("from and to are times with a zone (ISO 8601), from before to", field="from")
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        rows = await turnaround_rows(session, company_id=company_id, start=start, end=end,
                                     now=hub.clock.now())
    return TurnaroundOut(company_id=company_id, start=start, to=end,
                         rows=[TurnaroundRowOut(**asdict(r)) for r in rows])


@routes.get("/api/reports/turnaround", summary="Turnaround per modality and urgency",
            query=TurnaroundQuery, response=TurnaroundOut, errors=(403, 422))
async def turnaround(request: web.Request, query: TurnaroundQuery) -> web.Response:
    """For a company admin (its own cases) or an operator (``company_id``, or all): cases
    submitted in ``[from, to)``, how many were reported and overdue, median and p90 hours from
    submission to report. ``/api/reports/turnaround.csv`` answers the same rows as CSV."""
    out = await _turnaround(request, query)
    return web.json_response(out.model_dump(mode="json", by_alias=True))


@routes.get("/api/reports/turnaround.csv", summary="Turnaround per modality and urgency, as CSV",
            query=TurnaroundQuery, errors=(403, 422), content_type="text/csv")
async def turnaround_csv(request: web.Request, query: TurnaroundQuery) -> web.Response:
    out = await _turnaround(request, query)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(list(TurnaroundRowOut.model_fields))
    for r in out.rows:
        writer.writerow(["" if v is None else v for v in r.model_dump().values()])
    return web.Response(text=buf.getvalue(), content_type="text/csv", charset="utf-8")


# --------------------------------------------------------------------------- studies


def study_summary(study: Study) -> dict[str, Any]:
    return {
        "id": study.id, "practice_id": study.practice_id,
        "study_instance_uid": study.study_instance_uid, "status": study.status,
        **header_values(study), "modalities": study.modalities,
        "instance_count": study.instance_count, "size_bytes": study.size_bytes,
        "calling_ae": study.calling_ae,
        "first_received_at": study.first_received_at.isoformat(),
        "last_received_at": study.last_received_at.isoformat(),
        "stable_at": study.stable_at.isoformat() if study.stable_at else None,
    }


class StudyPath(RequestModel):
    study_id: Id


class StudyQuery(RequestModel):
    status: Literal["receiving", "stable"] | None = None


@routes.get("/api/studies", summary="List received studies", query=StudyQuery)
async def list_studies(request: web.Request, query: StudyQuery) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        stmt = select(Study)
        visible = await principal.study_filter(session)  # a company also reads its routed cases' studies
        if visible is not None:
            stmt = stmt.where(visible)
        if query.status:
            stmt = stmt.where(Study.status == query.status)
        rows = (await session.execute(stmt.order_by(Study.id.desc()).limit(LIST_LIMIT))).scalars()
        return {"items": [study_summary(s) for s in rows]}


@routes.get("/api/studies/{study_id}", summary="A study and its instances",
            path_params=StudyPath, errors=(404,))
async def get_study(request: web.Request, path: StudyPath) -> dict[str, Any]:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        study = await session.get(Study, path.study_id)
        if study is None or not await principal.can_read_study(session, study.id):
            raise NotFound.of("study")
        body = study_summary(study)
        rows = (await session.execute(
            select(Instance).where(Instance.study_id == study.id).order_by(Instance.id))).scalars()
        body["instances"] = [
            {"id": i.id, "sop_instance_uid": i.sop_instance_uid, "sop_class_uid": i.sop_class_uid,
             "series_instance_uid": i.series_instance_uid, "modality": i.modality,
             "size_bytes": i.size_bytes, "received_at": i.received_at.isoformat()}
            for i in rows
        ]
        return body


__all__ = ["CaseSummary", "routes"]
