"""JSON API for studies and cases (registered through ``vethub_web_routes``).

- ``POST /api/cases`` (practice staff, or an operator): ``{"study_id", "clinical_history",
  "question"}`` -> 201 with the case; 403 ``account_not_approved``, 422 ``no_route`` with the
  reason when the case cannot be submitted.
- ``GET /api/cases`` (``?status=``), ``GET /api/cases/{id}`` with its status history and the
  per-instance forward results. Scoped: staff see their practice's cases, a company admin the
  cases routed to the company, an operator all.
- ``GET /api/studies`` (``?status=``), ``GET /api/studies/{id}``: what was received.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy import select

from hub.imaging.cases import CaseRefused, case_detail, case_summary, submit_case
from hub.imaging.models import Case, Instance, Study
from hub.imaging.routing import CaseRequest
from hub.web.auth import get_principal, require_role
from hub.web.errors import ApiError, json_body, not_found
from hub.web.keys import HUB_KEY

LIST_LIMIT = 500


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, "invalid", f"{field} must be an integer", field)
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ApiError(400, "invalid", f"{field} must be an integer", field)
    if not 1 <= int(value) <= 2**63 - 1:  # no row has it (and the database refuses to compare)
        raise not_found(field.removesuffix("_id"))
    return int(value)


def _text(body: dict, field: str, limit: int = 20000) -> str:
    value = body.get(field, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"{field} must be a string", field)
    if len(value) > limit:
        raise ApiError(400, "invalid", f"{field} is longer than {limit} characters", field)
    return value


async def create_case(request: web.Request) -> web.Response:
    principal = require_role(request, "practice_staff", "operator")
    hub = request.app[HUB_KEY]
    body = await json_body(request)
    if "study_id" not in body:
        raise ApiError(400, "required", "study_id is required", "study_id")
    study_id = _int(body["study_id"], "study_id")
    history, question = _text(body, "clinical_history"), _text(body, "question")
    async with hub.transaction() as session:
        study = await session.get(Study, study_id)
        if study is None or not await principal.can_access_practice(session, study.practice_id):
            raise not_found("study")
        req = CaseRequest(
            practice_id=study.practice_id,
            study_id=study.id,
            clinical_history=history,
            question=question,
            submitted_by=principal.actor,
        )
        try:
            case = await submit_case(session, hub, req, study=study)
        except CaseRefused as refusal:
            raise ApiError(refusal.status, refusal.code, refusal.message) from refusal
        detail = await case_detail(session, case)
    return web.json_response(detail, status=201)


async def _visible_cases(request: web.Request, session):
    principal = get_principal(request)
    stmt = select(Case)
    if principal.role == "company_admin":
        stmt = stmt.where(Case.company_id == principal.company_id)
    elif principal.role != "operator":
        stmt = stmt.where(Case.practice_id == principal.practice_id)
    return stmt


async def list_cases(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        stmt = await _visible_cases(request, session)
        if status := request.query.get("status"):
            stmt = stmt.where(Case.status == status)
        rows = (await session.execute(stmt.order_by(Case.id.desc()).limit(LIST_LIMIT))).scalars()
        return web.json_response({"items": [case_summary(c) for c in rows]})


async def get_case(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    case_id = _int(request.match_info["case_id"], "case_id")
    async with hub.sessionmaker() as session:
        stmt = await _visible_cases(request, session)
        case = (await session.execute(stmt.where(Case.id == case_id))).scalar_one_or_none()
        if case is None:
            raise not_found("case")
        return web.json_response(await case_detail(session, case))


def study_summary(study: Study) -> dict:
    return {
        "id": study.id,
        "practice_id": study.practice_id,
        "study_instance_uid": study.study_instance_uid,
        "status": study.status,
        "modality": study.modality,
        "modalities": study.modalities,
        "instance_count": study.instance_count,
        "size_bytes": study.size_bytes,
        "animal_name": study.animal_name,
        "animal_id": study.animal_id,
        "species": study.species,
        "responsible_person": study.responsible_person,
        "body_part": study.body_part,
        "study_date": study.study_date,
        "study_description": study.study_description,
        "institution": study.institution,
        "calling_ae": study.calling_ae,
        "first_received_at": study.first_received_at.isoformat(),
        "last_received_at": study.last_received_at.isoformat(),
        "stable_at": study.stable_at.isoformat() if study.stable_at else None,
    }


async def list_studies(request: web.Request) -> web.Response:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        stmt = select(Study)
        visible = await principal.study_filter(session)
        if visible is not None:
            stmt = stmt.where(visible)
        if status := request.query.get("status"):
            stmt = stmt.where(Study.status == status)
        rows = (await session.execute(stmt.order_by(Study.id.desc()).limit(LIST_LIMIT))).scalars()
        return web.json_response({"items": [study_summary(s) for s in rows]})


async def get_study(request: web.Request) -> web.Response:
    principal = get_principal(request)
    hub = request.app[HUB_KEY]
    study_id = _int(request.match_info["study_id"], "study_id")
    async with hub.sessionmaker() as session:
        study = await session.get(Study, study_id)
        if study is None or not await principal.can_read_study(session, study.id):
            raise not_found("study")
        body = study_summary(study)
        rows = (
            await session.execute(
                select(Instance).where(Instance.study_id == study.id).order_by(Instance.id)
            )
        ).scalars()
        body["instances"] = [
            {
                "id": i.id,
                "sop_instance_uid": i.sop_instance_uid,
                "sop_class_uid": i.sop_class_uid,
                "series_instance_uid": i.series_instance_uid,
                "modality": i.modality,
                "size_bytes": i.size_bytes,
                "received_at": i.received_at.isoformat(),
            }
            for i in rows
        ]
        return web.json_response(body)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/cases", create_case),
        web.get("/api/cases", list_cases),
        web.get("/api/cases/{case_id}", get_case),
        web.get("/api/studies", list_studies),
        web.get("/api/studies/{study_id}", get_study),
    ]
