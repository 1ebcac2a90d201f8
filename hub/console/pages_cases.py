"""Studies and cases: practice staff see received studies and submit a case (history, question,
urgency, attachments); the company the case is routed to sees it, downloads attachments and posts
the report; the practice sees the report. All through :mod:`hub.imaging`'s services."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub.console import listing
from hub.console.app import form_value, requires
from hub.console.listing import Column
from hub.console.pages_company import path_id
from hub.console.render import PRINCIPAL, render
from hub.db.models import Company, Practice
from hub.errors import DomainError, Invalid, NotFound, TooLarge
from hub.imaging import cases as case_service
from hub.imaging import reports as report_service
from hub.imaging.api import MAGIC, MAX_ATTACHMENT, MAX_ATTACHMENTS, MAX_REPORT_PDF, study_summary
from hub.imaging.api_models import case_detail, case_summary
from hub.imaging.dicomweb import _zip as zip_instances
from hub.imaging.dicomweb import storage_root
from hub.imaging.models import Case, CaseAttachment, Instance, Study, Urgency
from hub.web.keys import HUB_KEY

routes = web.RouteTableDef()
LIMIT = 500

STUDY_COLUMNS = (
    Column("animal", "Animal", link=lambda r: f"/console/studies/{r['id']}/case"),
    Column("owner", "Owner"),
    Column("modality", "Modality"),
    Column("description", "Description"),
    Column("images", "Images", kind="int"),
    Column("status", "Status"),
    Column("received", "Received", kind="date"),
)
CASE_COLUMNS = (
    Column("id", "Case", kind="int", link=lambda r: f"/console/cases/{r['id']}"),
    Column("practice", "Practice"),
    Column("company", "Company"),
    Column("urgency", "Urgency"),
    Column("status", "Status"),
    Column("overdue", "Overdue", kind="bool"),
    Column("created", "Submitted", kind="date"),
    Column("reported", "Reported", kind="date"),
)


def _upload(field: Any, what: str, limit: int) -> tuple[str, str, bytes] | None:
    """A file from the form, checked like the API checks base64 attachments (type by content)."""
    if not isinstance(field, web.FileField) or not field.filename:
        return None
    raw = field.file.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(f"{field.filename} is over {limit // (1024 * 1024)} MB", field=what)
    kind = next((ct for ct, magic in MAGIC.items() if raw.startswith(magic)), None)
    if kind is None:
        raise Invalid(f"{field.filename} is not a PDF, PNG or JPEG file", field=what)
    return field.filename[:200], kind, raw


@routes.get("/studies")
@requires("practice_staff", "operator")
async def studies(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        stmt = select(Study)
        ids = await me.practice_ids(session)
        if ids is not None:
            stmt = stmt.where(Study.practice_id.in_(ids))
        found = [study_summary(s) for s in (await session.execute(stmt.order_by(Study.id.desc()).limit(LIMIT))).scalars()]
    rows = [{"id": s["id"], "animal": s["animal_name"] or f"Study {s['id']}", "owner": s["responsible_person"] or "",
             "modality": s["modality"] or ", ".join(s["modalities"] or []), "description": s["study_description"] or "",
             "images": s["instance_count"], "status": s["status"], "received": s["last_received_at"][:16].replace("T", " ")}
            for s in found]
    shown = listing.build(rows, STUDY_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "studies.csv")
    return render(request, "studies.html.j2", title="Studies", listing=shown)


async def _study(session: Any, me: Any, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    ids = await me.practice_ids(session)
    if study is None or (ids is not None and study.practice_id not in ids):
        raise NotFound.of("study")
    return study


async def _case_form(request: web.Request, study_id: int, *, status: int = 200, error: str | None = None,
                     values: dict[str, str] | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        study = study_summary(await _study(session, me, study_id))
    return render(request, "case_form.html.j2", status=status, title="Submit a case", study=study, error=error,
                  urgencies=list(Urgency), values=values or {})


@routes.get("/studies/{id}/case")
@requires("practice_staff", "operator")
async def case_form(request: web.Request) -> web.StreamResponse:
    return await _case_form(request, path_id(request))


@routes.post("/studies/{id}/case")
@requires("practice_staff", "operator")
async def submit_case(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    study_id = path_id(request)
    form = await request.post()
    values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    try:
        files = [f for f in (_upload(v, "attachments", MAX_ATTACHMENT) for v in form.getall("attachments", []))
                 if f is not None]
        if len(files) > MAX_ATTACHMENTS:
            raise Invalid(f"at most {MAX_ATTACHMENTS} attachments", field="attachments")
        urgency = form_value(form, "urgency", 10) or "routine"
        if urgency not in set(Urgency):
            raise Invalid("choose an urgency", field="urgency")
        sub = case_service.CaseSubmission(
            study_id=study_id, clinical_history=form_value(form, "clinical_history", 10_000),
            question=form_value(form, "question", 2000), urgency=Urgency(urgency),
            second_opinion=form.get("second_opinion") == "on",
            allow_incomplete=form.get("allow_incomplete") == "on",
            attachments=[case_service.Attachment(*f) for f in files])
        async with hub.transaction() as session:
            await _study(session, me, study_id)
            case = await case_service.submit_case(session, hub, sub, actor=me.actor,
                                                  practice_ids=await me.practice_ids(session))
            case_id = case.id
    except case_service.DuplicateCase as dup:
        raise web.HTTPSeeOther(f"/console/cases/{dup.case_id}") from None
    except DomainError as err:
        if err.status == 404:
            raise
        return await _case_form(request, study_id, status=err.status, error=err.message, values=values)
    raise web.HTTPSeeOther(f"/console/cases/{case_id}?notice=saved")


@routes.get("/cases")
async def case_list(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    now = hub.clock.now()
    async with hub.sessionmaker() as session:
        companies = dict((await session.execute(select(Company.id, Company.name))).all())
        practices = dict((await session.execute(select(Practice.id, Practice.name))).all())
        found = [case_summary(c, now) for c in (await session.execute(  # type: ignore[arg-type]
            case_service.visible_cases(me).order_by(Case.id.desc()).limit(LIMIT))).scalars()]
    rows = [{"id": c.id, "practice": practices.get(c.practice_id, ""), "company": companies.get(c.company_id or 0, ""),
             "urgency": c.urgency.value, "status": c.status.value.replace("_", " "), "overdue": c.overdue,
             "created": c.created_at.strftime("%Y-%m-%d %H:%M"),
             "reported": c.reported_at.strftime("%Y-%m-%d %H:%M") if c.reported_at else ""} for c in found]
    shown = listing.build(rows, CASE_COLUMNS, request.query, request.path)
    if request.query.get("format") == "csv":
        return listing.csv_response(shown, "cases.csv")
    return render(request, "cases.html.j2", title="Cases", listing=shown)


async def _case_page(request: web.Request, case_id: int, *, status: int = 200, error: str | None = None) -> web.Response:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, me, case_id)
        detail = await case_detail(session, hub, case)
        practice = await session.get(Practice, case.practice_id)
        company = await session.get(Company, case.company_id) if case.company_id else None
        study = study_summary(await session.get(Study, case.study_id))  # type: ignore[arg-type]
    return render(request, "case.html.j2", status=status, title=f"Case {case_id}", case=detail, study=study,
                  practice=practice, company=company, error=error,
                  can_report=me.role in ("company_admin", "operator"))


@routes.get("/cases/{id}")
async def case_page(request: web.Request) -> web.StreamResponse:
    return await _case_page(request, path_id(request))


@routes.post("/cases/{id}/report")
@requires("company_admin", "operator")
async def post_report(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    case_id = path_id(request)
    form = await request.post()
    try:
        pdf = _upload(form.get("pdf"), "pdf", MAX_REPORT_PDF)
        if pdf is not None and pdf[1] != "application/pdf":
            raise Invalid("the report file must be a PDF", field="pdf")
        async with hub.transaction() as session:
            case = await case_service.find_case(session, me, case_id)
            await report_service.add_report(session, hub, case, text=form_value(form, "text", 100_000),
                                            radiologist=form_value(form, "radiologist", 200),
                                            pdf=pdf[2] if pdf else None, actor=me.actor)
    except DomainError as err:
        if err.status == 404:
            raise
        return await _case_page(request, case_id, status=err.status, error=err.message)
    raise web.HTTPSeeOther(f"/console/cases/{case_id}?notice=saved#reports")


@routes.get("/cases/{id}/images.zip")
async def images_zip(request: web.Request) -> web.StreamResponse:
    """The case's DICOM images as a zip, built on disk and streamed (as the API's images.zip)."""
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, me, path_id(request))
        instances = list((await session.execute(
            select(Instance).where(Instance.study_id == case.study_id).order_by(Instance.id))).scalars())
    if not instances:
        raise NotFound("this case's study has no stored images")
    target = hub.data_dir / "tmp" / f"console-case-{case.id}-{secrets.token_hex(6)}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        await asyncio.to_thread(zip_instances, storage_root(hub), instances, target)
        response = web.StreamResponse(headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="case-{case.id}-images.zip"'})
        response.content_length = target.stat().st_size
        await response.prepare(request)
        with target.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1024 * 1024):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        target.unlink(missing_ok=True)


@routes.get("/cases/{id}/attachments/{aid}")
async def attachment(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, me, path_id(request))
        row = await session.get(CaseAttachment, path_id(request, "aid"))
        if row is None or row.case_id != case.id:
            raise NotFound.of("attachment")
    return web.Response(body=row.content, content_type=row.content_type,
                        headers={"Content-Disposition": f'attachment; filename="{row.filename}"'})


@routes.get("/cases/{id}/reports/{rid}.pdf")
async def report_pdf(request: web.Request) -> web.StreamResponse:
    hub, me = request.app[HUB_KEY], request[PRINCIPAL]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, me, path_id(request))
        report = await report_service.find_report(session, case, path_id(request, "rid"))
        if not report.pdf:
            raise NotFound.of("report file")
    return web.Response(body=report.pdf, content_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="case-{case.id}-report-{report.id}.pdf"'})
