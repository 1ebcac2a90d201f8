"""DICOMweb beside retrieval, so a viewer can find and lay out what it then retrieves:

- QIDO-RS search: ``GET /dicomweb/studies``, ``/dicomweb/studies/{study}/series``,
  ``/dicomweb/studies/{study}/series/{series}/instances`` (``application/dicom+json``), from the
  rows the hub keeps; a study search takes ``StudyInstanceUID``, ``PatientID`` and
  ``ModalitiesInStudy`` as exact matches.
- Metadata: ``GET /dicomweb/studies/{study}/metadata`` and ``.../series/{series}/metadata``:
  each instance's header as DICOM JSON, values over 1 KiB (pixel data) as ``BulkDataURI``\\s
  to ``.../instances/{instance}/bulkdata/{tag}``, which answers the value as
  ``multipart/related; type="application/octet-stream"``.

Scoping is the one of :mod:`hub.imaging.dicomweb`: the same token, the same studies, 404 else.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import ConfigDict
from pydicom import dcmread
from pydicom.dataelem import DataElement
from sqlalchemy import Select, select

from hub.auth import Principal
from hub.errors import NotFound
from hub.imaging.dicomweb import UID, bearer_principal, storage_root, visible_instances
from hub.imaging.models import Case, CaseStatus, Instance, Study
from hub.web.contract import ApiRoutes, RequestModel
from hub.web.keys import HUB_KEY

routes = ApiRoutes(tag="dicomweb")
BULK_THRESHOLD = 1024
DICOM_JSON = "application/dicom+json"


def _attr(vr: str, *values: Any) -> dict[str, Any]:
    present = [v for v in values if v not in (None, "")]
    if not present:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [{"Alphabetic": str(v)} for v in present]}
    return {"vr": vr, "Value": list(present)}


def _visible_studies(principal: Principal) -> Select[Study]:
    stmt = select(Study)
    if principal.role == "company_admin":
        return stmt.where(Study.id.in_(select(Case.study_id).where(
            Case.company_id == principal.company_id, Case.status != CaseStatus.CANCELLED)))
    if principal.role != "operator":
        return stmt.where(Study.practice_id == principal.practice_id)
    return stmt


def _json(items: list[dict[str, Any]]) -> web.Response:
    return web.json_response(items, content_type=DICOM_JSON)


class StudySearch(RequestModel):
    """Query of a QIDO-RS study search: the DICOM attributes the hub searches by, plus paging."""
    # Viewers send includefield, fuzzymatching and attribute filters the hub does not search
    # by; refusing them would make the viewer fail, so they are ignored.
    model_config = ConfigDict(extra="ignore")

    StudyInstanceUID: str | None = None
    PatientID: str | None = None
    ModalitiesInStudy: str | None = None
    limit: int = 100
    offset: int = 0


class StudyUid(RequestModel):
    """Path parameters of QIDO-RS routes addressing a study."""
    study: str


class SeriesUid(StudyUid):
    """Path parameters of QIDO-RS routes addressing a series."""
    series: str


class BulkPath(SeriesUid):
    """Path parameters of the bulk-data route: the instance and the tag of its value."""
    instance: str
    tag: str


@routes.get("/dicomweb/studies", summary="QIDO-RS: search studies", query=StudySearch,
            errors=(401,), content_type=DICOM_JSON)
async def search_studies(request: web.Request, query: StudySearch) -> web.Response:
    principal = await bearer_principal(request)
    stmt = _visible_studies(principal)
    if query.StudyInstanceUID:
        stmt = stmt.where(Study.study_instance_uid == query.StudyInstanceUID)
    if query.PatientID:
        stmt = stmt.where(Study.animal_id == query.PatientID)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = (await session.execute(stmt.order_by(Study.id).offset(max(query.offset, 0))
                                      .limit(min(max(query.limit, 1), 1000)))).scalars().all()
    if query.ModalitiesInStudy:
        rows = [s for s in rows if query.ModalitiesInStudy in (s.modalities or [])]
    return _json([{
        "0020000D": _attr("UI", s.study_instance_uid), "00080020": _attr("DA", s.study_date),
        "00081030": _attr("LO", s.study_description), "00100010": _attr("PN", s.animal_name),
        "00100020": _attr("LO", s.animal_id), "00080061": _attr("CS", *(s.modalities or [])),
        "00201208": _attr("IS", s.instance_count),
    } for s in rows])


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series", summary="QIDO-RS: a study's series",
            path_params=StudyUid, errors=(401, 404), content_type=DICOM_JSON)
async def search_series(request: web.Request, path: StudyUid) -> web.Response:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study)
    series: dict[str, list[Instance]] = {}
    for inst in rows:
        series.setdefault(inst.series_instance_uid, []).append(inst)
    return _json([{
        "0020000D": _attr("UI", path.study), "0020000E": _attr("UI", uid),
        "00080060": _attr("CS", items[0].modality), "00201209": _attr("IS", len(items)),
    } for uid, items in series.items()])


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series/{{series:{UID}}}/instances",
            summary="QIDO-RS: a series' instances", path_params=SeriesUid, errors=(401, 404),
            content_type=DICOM_JSON)
async def search_instances(request: web.Request, path: SeriesUid) -> web.Response:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study, path.series)
    return _json([{
        "0020000D": _attr("UI", path.study), "0020000E": _attr("UI", path.series),
        "00080016": _attr("UI", i.sop_class_uid), "00080018": _attr("UI", i.sop_instance_uid),
    } for i in rows])


def _metadata(path: Path, uri_of: Callable[[str], str]) -> dict[str, Any]:
    ds = dcmread(path)

    def bulk(element: DataElement) -> str:
        return uri_of(f"{element.tag:08X}")

    return ds.to_json_dict(bulk_data_threshold=BULK_THRESHOLD, bulk_data_element_handler=bulk)


def _uri_maker(prefix: str) -> Callable[[str], str]:
    return lambda tag: prefix + tag


async def _metadata_of(request: web.Request, instances: list[Instance]) -> web.Response:
    root = storage_root(request.app[HUB_KEY])
    base = str(request.url.with_query(None)).rsplit("/dicomweb/", 1)[0]
    out = []
    for inst in instances:
        prefix = (f"{base}/dicomweb/studies/{inst.study_instance_uid}/series/"
                  f"{inst.series_instance_uid}/instances/{inst.sop_instance_uid}/bulkdata/")
        out.append(await asyncio.to_thread(_metadata, root / inst.path, _uri_maker(prefix)))
    return _json(out)


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/metadata", summary="WADO-RS: a study's metadata",
            path_params=StudyUid, errors=(401, 404), content_type=DICOM_JSON)
async def study_metadata(request: web.Request, path: StudyUid) -> web.Response:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study)
    return await _metadata_of(request, rows)


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series/{{series:{UID}}}/metadata",
            summary="WADO-RS: a series' metadata", path_params=SeriesUid, errors=(401, 404),
            content_type=DICOM_JSON)
async def series_metadata(request: web.Request, path: SeriesUid) -> web.Response:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        rows = await visible_instances(session, principal, path.study, path.series)
    return await _metadata_of(request, rows)


def _element_value(path: Path, tag: int) -> bytes:
    ds = dcmread(path)
    if tag not in ds:
        raise NotFound.of("bulk data")
    value = ds[tag].value
    return value if isinstance(value, bytes) else str(value).encode()


@routes.get(f"/dicomweb/studies/{{study:{UID}}}/series/{{series:{UID}}}/instances/{{instance:{UID}}}"
            "/bulkdata/{tag:[0-9A-Fa-f]{8}}", summary="WADO-RS: one bulk data value",
            path_params=BulkPath, errors=(401, 404), content_type="multipart/related")
async def bulkdata(request: web.Request, path: BulkPath) -> web.StreamResponse:
    principal = await bearer_principal(request)
    async with request.app[HUB_KEY].sessionmaker() as session:
        [inst] = await visible_instances(session, principal, path.study, path.series, path.instance)
    data = await asyncio.to_thread(_element_value, storage_root(request.app[HUB_KEY]) / inst.path,
                                   int(path.tag, 16))
    boundary = secrets.token_hex(16)
    body = (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return web.Response(body=body, headers={
        "Content-Type": f'multipart/related; type="application/octet-stream"; boundary={boundary}'})
