"""Images of cases delivered in the hub: a zip of the DICOM files, and DICOMweb WADO-RS.

- ``GET /api/cases/{case_id}/images.zip``: every stored instance of the case's study, as the
  files were received (``<series>/<sop instance>.dcm``).
- ``GET /dicomweb/studies/{study}``, ``.../series/{series}``,
  ``.../series/{series}/instances/{instance}``: WADO-RS retrieve, answered as
  ``multipart/related; type="application/dicom"`` with each instance's Part 10 file unchanged.
  These take the same bearer token as /api (a DICOMweb viewer sends it as
  ``Authorization: Bearer``); a company admin sees the studies of cases routed to it, practice
  staff their practice's studies. Anything else answers 404, like a missing study.
"""

from __future__ import annotations

import asyncio
import secrets
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.auth import Principal, authenticate
from hub.errors import NotFound, Unauthorized
from hub.imaging import cases as case_service
from hub.imaging.models import Case, CaseStatus, Instance, Study
from hub.web.auth import get_principal
from hub.web.contract import ApiRoutes, Id, RequestModel
from hub.web.keys import HUB_KEY

if TYPE_CHECKING:
    from hub.core import Hub

routes = ApiRoutes(tag="dicomweb")
UID = r"[0-9.]{1,64}"


def storage_root(hub: Hub) -> Path:
    """Where the DICOM receiver keeps instances (its ``storage_root``, else data_dir/dicom)."""
    section = hub.config.section("dicom")
    root = getattr(section, "storage_root", None) if section is not None else None
    return Path(root or hub.data_dir / "dicom").resolve()


async def bearer_principal(request: web.Request) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("DICOMweb needs `Authorization: Bearer <token>`", code="missing_token")
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        return await authenticate(session, token.strip(), hub.clock.now())


async def visible_instances(
    session: AsyncSession, principal: Principal, study_uid: str, series_uid: str | None = None,
    sop_uid: str | None = None,
) -> list[Instance]:
    stmt = (select(Instance).join(Study, Study.id == Instance.study_id)
            .where(Study.study_instance_uid == study_uid))
    if principal.role == "company_admin":
        stmt = stmt.where(Study.id.in_(select(Case.study_id).where(
            Case.company_id == principal.company_id, Case.status != CaseStatus.CANCELLED)))
    elif principal.role != "operator":
        stmt = stmt.where(Study.practice_id == principal.practice_id)
    if series_uid is not None:
        stmt = stmt.where(Instance.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    rows = list((await session.execute(stmt.order_by(Instance.id))).scalars())
    if not rows:
        raise NotFound.of("study" if series_uid is None else "series" if sop_uid is None else "instance")
    return rows


async def _multipart(request: web.Request, instances: list[Instance]) -> web.StreamResponse:
    root = storage_root(request.app[HUB_KEY])
    boundary = secrets.token_hex(16)
    rsp = web.StreamResponse(headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    await rsp.prepare(request)
    for inst in instances:
        data = await asyncio.to_thread((root / inst.path).read_bytes)
        await rsp.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n"
                        f"Content-Length: {len(data)}\r\n\r\n".encode())
        await rsp.write(data)
        await rsp.write(b"\r\n")
    await rsp.write(f"--{boundary}--\r\n".encode())
    await rsp.write_eof()
    return rsp


class StudyUid(RequestModel):
    """Path parameters of WADO-RS routes addressing a study."""
    study: str


class SeriesUid(StudyUid):
    """Path parameters of WADO-RS routes addressing a series."""
    series: str


class InstanceUid(SeriesUid):
    """Path parameters of WADO-RS routes addressing a single instance."""
    instance: str


@routes.get(f"/dicomweb/studies/{{study:{UID}}}", summary="WADO-RS: a study's instances",
            path_params=StudyUid, errors=(401, 404), content_type="multipart/related")
async def wado_study(request: web.Request, path: StudyUid) -> web.StreamResponse:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study)
    return await _multipart(request, rows)


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series/{{series:{UID}}}",
            summary="WADO-RS: a series' instances", path_params=SeriesUid, errors=(401, 404),
            content_type="multipart/related")
async def wado_series(request: web.Request, path: SeriesUid) -> web.StreamResponse:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study, path.series)
    return await _multipart(request, rows)


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series/{{series:{UID}}}/instances/{{instance:{UID}}}",
            summary="WADO-RS: one instance", path_params=InstanceUid, errors=(401, 404),
            content_type="multipart/related")
async def wado_instance(request: web.Request, path: InstanceUid) -> web.StreamResponse:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study, path.series, path.instance)
    return await _multipart(request, rows)


class CasePath(RequestModel):
    """Path parameters of the case download route."""
    case_id: Id


def _zip(root: Path, instances: list[Instance], target: Path) -> None:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for inst in instances:
            zf.write(root / inst.path, f"{inst.series_instance_uid}/{inst.sop_instance_uid}.dcm")


@routes.get("/api/cases/{case_id}/images.zip", summary="The case's images as a zip of DICOM files",
            path_params=CasePath, errors=(404,), content_type="application/zip")
async def case_zip(request: web.Request, path: CasePath) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    async with hub.sessionmaker() as session:
        case = await case_service.find_case(session, get_principal(request), path.case_id)
        instances = list((await session.execute(
            select(Instance).where(Instance.study_id == case.study_id).order_by(Instance.id))).scalars())
    root = storage_root(hub)
    # Built on disk, not in memory: a study can be hundreds of megabytes.
    target = hub.data_dir / "tmp" / f"case-{case.id}-{secrets.token_hex(6)}.zip"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        await asyncio.to_thread(_zip, root, instances, target)
        rsp = web.StreamResponse(headers={
            "Content-Type": "application/zip",
            "Content-Disposition": f'attachment; filename="case-{case.id}-images.zip"'})
        rsp.content_length = target.stat().st_size
        await rsp.prepare(request)
        with target.open("rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, 1024 * 1024):
                await rsp.write(chunk)
        await rsp.write_eof()
        return rsp
    finally:
        target.unlink(missing_ok=True)
